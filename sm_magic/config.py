"""``%sagemaker config``: the effective settings, where each comes from, and ``key=value`` changes."""

from __future__ import annotations

import json
from typing import Any

from sm_magic.errors import ConfigError

# key → (where it lives, how to read text)
STATE_KEYS: dict[str, Any] = {
    "endpoint": str, "handler": str, "temperature": float, "max_new_tokens": int, "top_p": float,
    "stop": lambda t: [s for s in t.split(",") if s], "stream": lambda t: t.lower() in ("1", "true", "yes", "on"),
    "concurrency": int, "context_tokens": int, "custom_attributes": str, "inference_component": str,
    "target_variant": str, "model_kwargs": json.loads,
    "debug": lambda t: t.lower() in ("1", "true", "yes", "on"),
}
SESSION_KEYS: dict[str, Any] = {
    "read_timeout": float, "connect_timeout": float, "max_attempts": int, "retry_mode": str,
    "max_pool_connections": int, "retry_read_timeouts": lambda t: t.lower() in ("1", "true", "yes", "on"),
}


def apply(state: Any, assignment: str) -> None:
    """Apply ``key=value`` to the shell's state or session."""
    key, sep, text = assignment.partition("=")
    key = key.strip().replace("-", "_")
    if not sep:
        raise ConfigError(f"Expected key=value, got {assignment!r}.")
    text = text.strip()
    parse = STATE_KEYS.get(key) or SESSION_KEYS.get(key)
    if parse is None:
        known = ", ".join([*STATE_KEYS, *SESSION_KEYS])
        raise ConfigError(f"Unknown setting '{key}'. Known: {known}.")
    try:
        value = parse(text) if text not in ("", "none", "None") else None
    except ValueError as e:
        raise ConfigError(f"{key}={text!r} is not valid ({e}).") from None
    if key in SESSION_KEYS:
        state.set_session(state.session.with_changes(**{key: value}))
        return
    trait = state.traits()[key]
    if value is None:
        value = trait.default_value if not getattr(trait, "allow_none", False) else None
    setattr(state, key, value)


def effective(state: Any, magics: Any) -> list[dict[str, Any]]:
    """Rows of setting, value, source."""
    configured = magics.config.get("SageMakerMagics", {}) if magics is not None else {}
    by_trait = {"endpoint": "default_endpoint", "handler": "default_handler", "stream": "stream",
                "concurrency": "concurrency", "context_tokens": "context_tokens"}
    rows = []
    for key in STATE_KEYS:
        value = getattr(state, key)
        trait = state.traits()[key]
        if by_trait.get(key) and by_trait[key] in configured:
            source = f"config (SageMakerMagics.{by_trait[key]})"
        elif value == trait.default_value or value in (None, "", [], {}):
            source = "default"
        else:
            source = "this kernel (%sagemaker config / panel)"
        rows.append({"setting": key, "value": json.dumps(value) if isinstance(value, list | dict) else value,
                     "source": source})
    settings = state.session.settings
    for key in SESSION_KEYS:
        rows.append({"setting": key, "value": getattr(settings, key), "source": "session"})
    rows.append({"setting": "aliases file", "value": str(state.aliases.path),
                 "source": "SM_MAGIC_ENDPOINTS or default"})
    return rows
