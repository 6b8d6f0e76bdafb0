"""Saved endpoint aliases in a plain INI file a user can read and edit (like jupysql's connections.ini).

    [qa]
    endpoint = my-llama-endpoint
    region = us-west-2
    handler = tgi
    temperature = 0.2
"""

from __future__ import annotations

import configparser
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sm_magic.errors import ConfigError

DEFAULT_PATH = Path("~/.sm_magic/endpoints.ini")
PARAMS = ("temperature", "max_new_tokens", "top_p", "stop", "seed")


def default_path() -> Path:
    return Path(os.environ.get("SM_MAGIC_ENDPOINTS", DEFAULT_PATH)).expanduser()


@dataclass
class Alias:
    name: str
    endpoint: str
    profile: str | None = None
    region: str | None = None
    role_arn: str | None = None
    endpoint_url: str | None = None
    handler: str | None = None
    inference_component: str | None = None
    target_variant: str | None = None
    custom_attributes: str | None = None
    context_tokens: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def session_changes(self) -> dict[str, Any]:
        changes = {k: getattr(self, k) for k in ("profile", "region", "role_arn", "endpoint_url") if getattr(self, k)}
        if self.endpoint_url:
            changes["control_endpoint_url"] = self.endpoint_url
        return changes


def _coerce(key: str, text: str) -> Any:
    if key in ("max_new_tokens", "seed", "context_tokens"):
        return int(text)
    if key in ("temperature", "top_p"):
        return float(text)
    if key == "stop":
        return json.loads(text) if text.startswith("[") else [text]
    if key == "model_kwargs":
        return json.loads(text)
    return text


class AliasStore:
    """Reads and writes aliases; the file is read when the store is made and on :meth:`reload`."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path).expanduser() if path else default_path()
        self._aliases: dict[str, Alias] = {}
        self.reload()

    def reload(self) -> None:
        parser = configparser.ConfigParser(interpolation=None)
        if self.path.exists():
            try:
                parser.read(self.path)
            except configparser.Error as e:
                raise ConfigError(f"{self.path} is not a valid INI file: {e}") from None
        self._aliases = {}
        own = {f.name for f in fields(Alias)} - {"name", "params"}
        for name in parser.sections():
            section = dict(parser[name])
            if "endpoint" not in section:
                raise ConfigError(f"{self.path}: alias [{name}] has no 'endpoint ='.")
            values: dict[str, Any] = {"params": {}}
            for key, text in section.items():
                try:
                    value = _coerce(key, text)
                except ValueError as e:
                    raise ConfigError(f"{self.path}: [{name}] {key} = {text!r} is not valid ({e}).") from None
                if key in own:
                    values[key] = value
                elif key == "model_kwargs":
                    values["params"].update(value)
                else:
                    values["params"][key] = value
            self._aliases[name] = Alias(name=name, **values)

    def _write(self) -> None:
        parser = configparser.ConfigParser(interpolation=None)
        for alias in self._aliases.values():
            section: dict[str, str] = {}
            for f in fields(Alias):
                value = getattr(alias, f.name)
                if f.name in ("name", "params") or value in (None, ""):
                    continue
                section[f.name] = str(value)
            for key, value in alias.params.items():
                section[key] = json.dumps(value) if isinstance(value, list | dict) else str(value)
            parser[alias.name] = section
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w") as fh:
            parser.write(fh)

    def add(self, alias: Alias) -> None:
        self._aliases[alias.name] = alias
        self._write()

    def remove(self, name: str) -> None:
        if name not in self._aliases:
            raise ConfigError(f"No alias '{name}'. Saved aliases: {', '.join(self._aliases) or 'none'}.")
        del self._aliases[name]
        self._write()

    def get(self, name: str) -> Alias | None:
        return self._aliases.get(name)

    def __iter__(self):
        return iter(self._aliases.values())

    def __len__(self) -> int:
        return len(self._aliases)
