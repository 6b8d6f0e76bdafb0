"""What a call means: aliases + defaults + session and detection caches → a concrete :class:`Resolved`.

One :class:`SageMaker` per shell holds the defaults users set (``%config SageMaker.<name>``,
``%sagemaker config``, the panel — its traits are generated from the parameter table), the
session, the handler registry, the aliases and the chat histories. The magics and the panel share
it; :meth:`SageMaker.resolve` is the one place where a call's settings are merged:
table default < ``%config``/``%sagemaker config``/panel < alias < the cell's own flags.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Bool, Instance, Int, TraitError, observe, validate
from traitlets.config import Configurable

from sm_magic.aliases import Alias, AliasStore, session_changes
from sm_magic.errors import ConfigError, EndpointNotFound, SageMakerError
from sm_magic.handlers.base import ContentHandler, Prompt
from sm_magic.handlers.registry import Registry
from sm_magic.history import settings_of
from sm_magic.options import InvokeOptions
from sm_magic.params import CONFIG_PARAMS, LOCAL_URL, VARIABLE_PARAMS, model_params, own_copy, unset
from sm_magic.session import Session, SessionSettings


@dataclass(slots=True)
class CallSpec:
    """One call as the user asked for it: the prompt and the parameter values given for this call."""

    prompt: Prompt
    values: dict[str, Any] = field(default_factory=dict)  # parameter name → value (flags or form)
    template: str | None = None  # the prompt before {var} filling, for history

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value is None else value


@dataclass(slots=True)
class Resolved:
    """A call ready to send: which session, endpoint, handler, parameters, headers."""

    session: Session
    endpoint: str
    handler: ContentHandler
    params: dict[str, Any]
    options: InvokeOptions
    prompt: Prompt
    values: dict[str, Any]  # every parameter's effective value
    alias: Alias | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # what the history keeps of them (read-only)


@dataclass(frozen=True, slots=True)
class _Merged:
    """A call's values merged (defaults < alias < the call's) and what follows from them alone; kept per
    distinct call values while the defaults and the alias it was made from are the current ones."""

    defaults: dict[str, Any]
    alias: Alias | None
    values: dict[str, Any]
    options: dict[str, Any]  # the invoke options that are set (each call gets its own InvokeOptions)
    params: dict[str, Any]
    session_changes: dict[str, Any]
    settings: dict[str, Any]  # settings_of(values): shared by the history entries of its calls, read-only


MERGED_KEPT = 256  # distinct option lines whose merged values are kept
_SCALARS = frozenset({str, int, float, bool, type(None)})


def local_url() -> str:
    return os.environ.get("SM_MAGIC_LOCAL_URL") or LOCAL_URL


def session_from_environment() -> Session:
    """The default session: the AWS default chain, or a local endpoint named in the environment."""
    url = os.environ.get("SM_MAGIC_LOCAL_URL")
    if url:
        return Session.local(url, region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    return Session(SessionSettings())


def connect(current: Session, *, local: str | None = None, client: Any = None, boto_session: Any = None,
            keys: dict[str, str | None] | None = None, **changes: Any) -> Session:
    """A new session, as ``%sagemaker session`` and the panel's Connect build it.

    ``local`` ("" for the default URL) points every service at a local endpoint; ``client`` /
    ``boto_session`` use the notebook's boto3 objects; ``keys`` are static credentials (used once);
    other ``changes`` are :class:`SessionSettings` fields applied to ``current``.
    """
    changes = {k: v for k, v in changes.items() if v not in (None, "")}
    keys = {k: v for k, v in (keys or {}).items() if v}
    if local is not None and not keys:
        return Session.local(local or local_url(), region=changes.pop("region", None) or "us-east-1", **{
            k: v for k, v in changes.items() if k not in ("endpoint_url", "control_endpoint_url")})
    if client is not None or boto_session is not None:
        model = getattr(getattr(client, "meta", None), "service_model", None)
        if model is not None and model.service_name != "sagemaker-runtime":
            raise ConfigError(f"--client needs a 'sagemaker-runtime' client, not '{model.service_name}'.")
        return Session(SessionSettings(region=changes.get("region")), client=client, boto_session=boto_session)
    if local is not None:
        changes.update(endpoint_url=local or local_url(), control_endpoint_url=local or local_url())
    return current.with_changes(**changes, **keys) if (changes or keys) else current


class UnusableSetting(ConfigError, TraitError):
    """A setting's value its type allows but that cannot work; a TraitError too, so ``%config`` keeps the
    old value."""


_Defaults = type("_Defaults", (Configurable,), {p.name: p.trait() for p in CONFIG_PARAMS})


class SageMaker(_Defaults):  # type: ignore[misc,valid-type]
    """Defaults for every call (``%config SageMaker.<name>``), the session, handlers, aliases, chats."""

    session = Instance(Session)
    busy = Bool(False, help="A panel call is running.")
    history_version = Int(0, help="Bumped when the call history changes (views observe it, paced).")

    def __init__(self, aliases: AliasStore | None = None, session: Session | None = None, **kwargs: Any):
        self._lock = threading.Lock()  # before the traits are set: their observer takes it
        self._defaults: dict[str, Any] | None = None
        self._defaults_version = 0  # bumped by every change: a dict read before one is not kept
        self._merged: dict[tuple, _Merged] = {}
        super().__init__(session=session or session_from_environment(), **kwargs)
        self.registry = Registry()
        self.aliases = aliases or AliasStore()
        self.chats: dict[str, list[dict[str, str]]] = {}
        self._detected: dict[tuple[int, str], Any] = {}
        self._async: dict[tuple[int, str], bool] = {}
        self._sessions: dict[tuple, Session] = {}

    # -- defaults ------------------------------------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        """The configured value of every configurable parameter that has one (cached until one changes)."""
        current = self._defaults
        if current is None:
            version = self._defaults_version
            current = {p.name: value for p in CONFIG_PARAMS if not unset(value := getattr(self, p.name))}
            with self._lock:  # a change made while this was read (another thread) wins
                if version == self._defaults_version:
                    self._defaults = current
        return current

    @observe(*(p.name for p in CONFIG_PARAMS))
    def _default_changed(self, change: Any) -> None:
        with self._lock:
            self._defaults_version += 1
            self._defaults = None
            self._merged.clear()  # nothing keeps a replaced default alive

    @validate("handler", "home")
    def _usable(self, proposal: Any) -> Any:
        """What a type cannot say (``%sagemaker config``, ``%config`` and the panel alike): a handler must
        exist, a home must be a folder this kernel can write."""
        name, value = proposal["trait"].name, proposal["value"]
        registry = getattr(self, "registry", None)  # None while a config file is applied at start-up
        if name == "handler" and value not in (None, "", "auto") and registry is not None:
            try:
                registry.get(value)
            except ConfigError as e:
                raise UnusableSetting(e.message) from None  # naming the closest handlers
        elif name == "home" and value:
            folder = Path(value).expanduser()
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UnusableSetting(f"home={value!r} cannot be used: {e.strerror or e}.",
                                  hint="Give a folder this kernel can create and write.") from None
            if not os.access(folder, os.W_OK | os.X_OK):
                raise UnusableSetting(f"home={value!r} cannot be used: the folder is not writable.",
                                  hint="Give a folder this kernel can write.")
        return value

    def values_for(self, spec_values: dict[str, Any], endpoint: str | None = None) -> tuple[dict[str, Any],
                                                                                          Alias | None]:
        """Effective values: defaults < alias < this call's; and the alias used, if any."""
        name = endpoint or spec_values.get("endpoint") or self.endpoint
        alias = self.aliases.get(name) if name else None
        return self._values(self.defaults(), alias, name, spec_values), alias

    @staticmethod
    def _values(defaults: dict[str, Any], alias: Alias | None, name: str | None,
                spec_values: dict[str, Any]) -> dict[str, Any]:
        values = dict(defaults)
        if alias:
            values.update(alias.values)
        values.update({k: v for k, v in spec_values.items() if v is not None})
        if alias and "model_kwargs" in alias.values and spec_values.get("model_kwargs"):
            values["model_kwargs"] = {**alias.values["model_kwargs"], **spec_values["model_kwargs"]}
        values["endpoint"] = alias.endpoint if alias else name
        return values

    def _merge(self, spec_values: dict[str, Any]) -> _Merged:
        """:meth:`values_for` and what follows from the values alone, made once per distinct call values
        (a cell run again, a loop) and made again when a default or the alias changes."""
        name = spec_values.get("endpoint") or self.endpoint
        alias = self.aliases.get(name) if name else None  # the file as this cell sees it
        defaults = self.defaults()
        classes = tuple(v.__class__ for v in spec_values.values())  # 1 and 1.0 and True are not one value here
        key = (tuple(spec_values.items()), classes) if _SCALARS.issuperset(classes) and \
            VARIABLE_PARAMS.isdisjoint(spec_values) else None  # a notebook's text or objects: never kept
        kept = self._merged.get(key) if key is not None else None
        if kept is not None and kept.defaults is defaults and kept.alias is alias:
            return kept
        values = self._values(defaults, alias, name, spec_values)
        changes = alias.session_changes() if alias else {}
        changes.update(session_changes(spec_values))  # the call's own (--region, a resumed job's)
        settings = settings_of(values)
        if alias:  # what the call was made with: Restore and resume go through the alias's name
            settings["endpoint"] = alias.name
        merged = _Merged(defaults, alias, values, InvokeOptions.from_values(values).set(), model_params(values),
                         changes, settings)
        if key is not None and all(v.__class__ in _SCALARS for v in values.values()):  # a list or dict: it
            with self._lock:  # could be changed in place (a default's, an alias's), so it is read every call
                if len(self._merged) >= MERGED_KEPT:
                    self._merged.clear()
                if defaults is self._defaults:
                    self._merged[key] = merged
        return merged

    # -- sessions and handlers ---------------------------------------------------------------------
    def session_for(self, changes: dict[str, Any]) -> Session:
        """The current session, or a cached variant of it (alias or per-cell overrides)."""
        changes = {k: v for k, v in changes.items() if v}
        if not changes:
            return self.session
        key = (id(self.session), tuple(sorted(changes.items())))
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = self.session.with_changes(**changes)
            return self._sessions[key]

    def set_session(self, session: Session) -> None:
        with self._lock:
            self._sessions.clear()
            self._detected.clear()
            self._async.clear()
        self.session = session

    def handler_for(self, session: Session, endpoint: str, name: str) -> ContentHandler:
        if name != "auto":
            return self.registry.get(name)
        return self.registry.get(self.detect(session, endpoint).handler)

    def detect(self, session: Session, endpoint: str) -> Any:
        """Detect (once per session and endpoint) which preset the endpoint speaks."""
        from sm_magic.handlers.detect import DEFAULT, Detection, detect

        key = (id(session), endpoint)
        if key not in self._detected:
            try:
                found = detect(session.sagemaker, endpoint)
            except EndpointNotFound:
                raise
            except SageMakerError as e:  # e.g. no sagemaker:DescribeEndpoint permission
                return Detection(DEFAULT, "", "", f"detection failed ({e.message}); using the default")
            with self._lock:
                self._detected[key] = found
        return self._detected[key]

    def is_async(self, session: Session, endpoint: str, ask: bool | None = None) -> bool:
        """Whether the endpoint is an async inference one (DescribeEndpointConfig, once per session).

        ``ask=None`` asks only when its handler was detected (so the control plane is known to answer)."""
        key = (id(session), endpoint)
        if key not in self._async:
            if not (ask or (ask is None and key in self._detected)):
                return False
            from sm_magic.async_ import async_inference_config

            try:
                found = async_inference_config(session, endpoint) is not None
            except SageMakerError:  # no permission or no such endpoint: the call itself will say
                found = False
            with self._lock:
                self._async[key] = found
        return self._async[key]

    # -- resolving ---------------------------------------------------------------------------------------
    def resolve(self, spec: CallSpec) -> Resolved:
        merged = self._merge(spec.values)
        values = dict(merged.values)  # the call's own: nothing downstream changes the kept ones
        endpoint = values["endpoint"]
        if not endpoint:
            raise ConfigError(
                "No endpoint given. Name one (`%%sagemaker my-endpoint`), set a default with "
                "`%sagemaker config endpoint=NAME`, or list them with `%sagemaker endpoints`."
            )
        session = self.session_for(merged.session_changes)
        handler = self.handler_for(session, endpoint, values.get("handler") or "auto")
        prompt = spec.prompt
        if values.get("chat"):
            if not handler.chat:
                raise ConfigError(f"--chat needs a messages-API handler (tgi-messages, lmi-chat, llama2-chat); "
                                  f"'{handler.name}' takes plain prompts.")
            prompt = [*self.chats.get(endpoint, []), {"role": "user", "content": str(spec.prompt)}]
        return Resolved(session, endpoint, handler, own_copy(merged.params), InvokeOptions(**merged.options), prompt,
                        values, merged.alias, merged.settings)

    def remember_chat(self, resolved: Resolved, answer: str) -> None:
        if resolved.values.get("chat"):
            self.chats[resolved.endpoint] = [*resolved.prompt, {"role": "assistant", "content": answer}]

