"""One :class:`State` per IPython shell: what the magics and the panel share.

The State holds the session, the handler registry, aliases, defaults for the next call, chat
histories and the call history. It is a traitlets object, so the panel links its widgets to
these traits and sees what the magics set (and the reverse). Calls go through :meth:`State.call`
so both views resolve aliases, defaults and handler detection the same way.
"""

from __future__ import annotations

import os
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from traitlets import Bool, Dict, Float, HasTraits, Instance, Int, List, Unicode

from sm_magic.aliases import Alias, AliasStore
from sm_magic.errors import ConfigError, SageMakerError
from sm_magic.handlers.base import ContentHandler, Prompt
from sm_magic.handlers.registry import Registry
from sm_magic.options import InvokeOptions
from sm_magic.session import Session, SessionSettings

if TYPE_CHECKING:
    from sm_magic.calls import Stream
    from sm_magic.result import Result

HISTORY_LIMIT = 1000
PROMPT_HEAD = 80


@dataclass
class CallSpec:
    """One call as the user asked for it, before aliases and defaults are applied."""

    prompt: Prompt
    endpoint: str | None = None
    handler: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: InvokeOptions = field(default_factory=InvokeOptions)
    region: str | None = None
    profile: str | None = None
    template: str | None = None  # the prompt before {var} filling, for history
    chat: bool = False


@dataclass
class Resolved:
    """A call ready to send: which session, endpoint, handler, parameters, headers."""

    session: Session
    endpoint: str
    handler: ContentHandler
    params: dict[str, Any]
    options: InvokeOptions
    prompt: Prompt
    alias: Alias | None = None


@dataclass
class HistoryEntry:
    when: float
    endpoint: str
    handler: str
    prompt: str
    latency: float | None
    tokens: int | None
    status: str
    params: dict[str, Any]
    template: str | None = None

    def row(self) -> dict[str, Any]:
        head = self.prompt.replace("\n", " ")
        return {
            "time": time.strftime("%H:%M:%S", time.localtime(self.when)),
            "endpoint": self.endpoint, "handler": self.handler,
            "prompt": head[:PROMPT_HEAD] + ("…" if len(head) > PROMPT_HEAD else ""),
            "latency_ms": None if self.latency is None else round(self.latency * 1000),
            "tokens": self.tokens, "status": self.status,
        }


def session_from_environment() -> Session:
    """The default session: the AWS default chain, or a local endpoint named in the environment."""
    url = os.environ.get("SM_MAGIC_LOCAL_URL")
    if url:
        return Session.local(url, region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    return Session(SessionSettings())


class State(HasTraits):
    """Everything a shell's magics and panel share."""

    session = Instance(Session)
    endpoint = Unicode("", help="Endpoint or alias used when a cell names none.")
    handler = Unicode("auto", help="Handler name, or 'auto' to detect from the endpoint's image.")
    temperature = Float(None, allow_none=True)
    max_new_tokens = Int(None, allow_none=True)
    top_p = Float(None, allow_none=True)
    stop = List(Unicode())
    model_kwargs = Dict()
    custom_attributes = Unicode("")
    inference_component = Unicode("")
    target_variant = Unicode("")
    stream = Bool(False)
    busy = Bool(False)
    history_version = Int(0, help="Bumped on every history entry (the panel observes it).")
    concurrency = Int(8)
    context_tokens = Int(2048, help="Default context size for document QA, in tokens.")
    debug = Bool(False, help="Show full tracebacks instead of one-paragraph errors.")

    def __init__(self, aliases: AliasStore | None = None, session: Session | None = None, **kwargs: Any):
        super().__init__(session=session or session_from_environment(), **kwargs)
        self.registry = Registry()
        self.aliases = aliases or AliasStore()
        self.history: list[HistoryEntry] = []
        self.chats: dict[str, list[dict[str, str]]] = {}
        self.detected: dict[tuple[int, str], Any] = {}
        self._sessions: dict[tuple, Session] = {}
        self._lock = threading.Lock()
        self.last: Any = None

    # -- resolving a call ------------------------------------------------------------------
    def default_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens,
                                  "top_p": self.top_p, "stop": list(self.stop) or None}
        params = {k: v for k, v in params.items() if v is not None}
        params.update(self.model_kwargs)
        return params

    def default_options(self) -> InvokeOptions:
        return InvokeOptions(custom_attributes=self.custom_attributes or None,
                             inference_component=self.inference_component or None,
                             target_variant=self.target_variant or None)

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
        self.detected.clear()
        self.session = session

    def resolve(self, spec: CallSpec) -> Resolved:
        name = spec.endpoint or self.endpoint
        if not name:
            raise ConfigError(
                "No endpoint given. Name one (`%%sagemaker my-endpoint`), set a default with "
                "`%sagemaker config endpoint=NAME`, or list them with `%sagemaker endpoints`."
            )
        alias = self.aliases.get(name)
        changes: dict[str, Any] = alias.session_changes() if alias else {}
        changes.update({k: v for k, v in (("region", spec.region), ("profile", spec.profile)) if v})
        session = self.session_for(changes)
        endpoint = alias.endpoint if alias else name
        params = {**self.default_params(), **(alias.params if alias else {}), **spec.params}
        options = self.default_options()
        if alias:
            options = options.merged(InvokeOptions(
                custom_attributes=alias.custom_attributes, inference_component=alias.inference_component,
                target_variant=alias.target_variant))
        options = options.merged(spec.options)
        handler_name = spec.handler or (alias.handler if alias and alias.handler else None) or self.handler
        handler = self.handler_for(session, endpoint, handler_name or "auto")
        prompt = spec.prompt
        if spec.chat:
            if not handler.chat:
                raise ConfigError(f"--chat needs a messages-API handler (tgi-messages, lmi-chat, llama2-chat); "
                                  f"'{handler.name}' takes plain prompts.")
            prompt = [*self.chats.get(endpoint, []), {"role": "user", "content": str(spec.prompt)}]
        return Resolved(session, endpoint, handler, params, options, prompt, alias)

    def handler_for(self, session: Session, endpoint: str, name: str) -> ContentHandler:
        if name != "auto":
            return self.registry.get(name)
        return self.registry.get(self.detect(session, endpoint).handler)

    def detect(self, session: Session, endpoint: str) -> Any:
        """Detect (once per session and endpoint) which preset the endpoint speaks."""
        from sm_magic.errors import EndpointNotFound
        from sm_magic.handlers.detect import DEFAULT, Detection, detect

        key = (id(session), endpoint)
        if key not in self.detected:
            try:
                self.detected[key] = detect(session.sagemaker, endpoint)
            except EndpointNotFound:
                raise
            except SageMakerError as e:  # e.g. no sagemaker:DescribeEndpoint permission
                return Detection(DEFAULT, "", "", f"detection failed ({e.message}); using the default")
        return self.detected[key]

    # -- calls -----------------------------------------------------------------------------
    def call(self, spec: CallSpec, *, dry_run: bool = False) -> Result:
        """One non-streamed call; recorded in the history (errors too)."""
        from sm_magic.calls import invoke

        resolved = self.resolve(spec)
        start = time.time()
        try:
            result = invoke(resolved.session, resolved.endpoint, resolved.prompt, resolved.handler,
                            resolved.params, resolved.options, dry_run=dry_run)
        except SageMakerError as e:
            self.record(spec, resolved, start, None, type(e).__name__)
            raise
        if not dry_run:
            self.record(spec, resolved, start, result, "ok")
            self._remember_chat(spec, resolved, result)
        return result

    def open_stream(self, spec: CallSpec) -> tuple[Stream, Callable[[BaseException | None], None]]:
        """A stream, and the function to call when it ends (records history and chat)."""
        from sm_magic.calls import stream

        resolved = self.resolve(spec)
        started = time.time()
        s = stream(resolved.session, resolved.endpoint, resolved.prompt, resolved.handler,
                   resolved.params, resolved.options)

        def done(error: BaseException | None) -> None:
            status = "ok" if error is None else type(error).__name__
            if s.result is not None and s.result.interrupted and error is None:
                status = "interrupted"
            self.record(spec, resolved, started, s.result, status)
            if error is None and s.result is not None:
                self._remember_chat(spec, resolved, s.result)

        return s, done

    def _remember_chat(self, spec: CallSpec, resolved: Resolved, result: Result) -> None:
        if spec.chat:
            self.chats[resolved.endpoint] = [*resolved.prompt, {"role": "assistant", "content": result.text}]

    def record(self, spec: CallSpec, resolved: Resolved, started: float, result: Result | None,
               status: str) -> None:
        prompt = spec.prompt if isinstance(spec.prompt, str) else str(spec.prompt[-1].get("content", ""))
        entry = HistoryEntry(
            when=started, endpoint=resolved.endpoint, handler=resolved.handler.name, prompt=prompt,
            latency=result.latency if result else None, tokens=result.tokens if result else None,
            status=status, params=dict(resolved.params), template=spec.template,
        )
        with self._lock:
            self.history.append(entry)
            del self.history[:-HISTORY_LIMIT]
        self.history_version += 1

    # -- document QA and batches -----------------------------------------------------------
    def concurrency_for(self, resolved: Resolved, requested: int | None) -> int:
        """Requested, else sized to the endpoint's instances; never above the connection pool."""
        from sm_magic.endpoints import instance_count

        pool = resolved.session.settings.max_pool_connections
        if requested is None:
            requested = max(self.concurrency, 4 * instance_count(resolved.session, resolved.endpoint))
        return max(1, min(requested, pool))

    def answer(self, spec: CallSpec, docs: Any, *, template: Any = None, mode: str = "auto",
               context_tokens: int | None = None, concurrency: int | None = None) -> Result:
        """Answer the spec's prompt (the question) from ``docs``; map steps run concurrently."""
        from sm_magic.batch import ItemError, run_batch
        from sm_magic.qa import answer

        resolved = self.resolve(spec)
        workers = self.concurrency_for(resolved, concurrency)

        def ask(prompt: str) -> Result:
            return self.call(replace(spec, prompt=prompt, chat=False))

        def ask_many(prompts: list[str]) -> list[Any]:
            outcomes = run_batch(ask, prompts, workers, label="map").outcomes
            return [o.error if isinstance(o, ItemError) else o for o in outcomes]

        return answer(str(spec.prompt), docs, ask, ask_many, template=template, mode=mode,
                      context_tokens=context_tokens or self.context_tokens,
                      max_new_tokens=int(resolved.params.get("max_new_tokens") or 256))

    def plan(self, spec: CallSpec, docs: Any, *, template: Any = None, mode: str = "auto",
             context_tokens: int | None = None) -> Any:
        """What document QA would send (a dry run): the mode and each call's prompt."""
        from sm_magic.qa import load_documents, make_plan, template_text

        resolved = self.resolve(spec)
        max_new = int(resolved.params.get("max_new_tokens") or 256)
        return make_plan(str(spec.prompt).strip(), load_documents(docs), template_text(template), mode,
                         context_tokens or self.context_tokens, max_new)

    def batch(self, spec: CallSpec, items: Any, namespace: Mapping[str, Any], *, column: str | None = None,
              concurrency: int | None = None, dry_run: bool = False, progress: bool = True) -> Any:
        """The cell template once per item (``{text}`` is the item or its ``column``)."""
        from sm_magic.batch import run_batch
        from sm_magic.display import Text
        from sm_magic.interpolate import InterpolationError, interpolate

        records = as_records(items)
        template = spec.template if spec.template is not None else str(spec.prompt)
        prompts = []
        for i, item in enumerate(records):
            if column is not None:
                if not isinstance(item, Mapping) or column not in item:
                    raise ConfigError(f"Batch item {i} has no field '{column}'.")
                value = item[column]
            else:
                value = item
            fields = dict(item) if isinstance(item, Mapping) else {}
            try:
                prompts.append(interpolate(template, ChainMap({"text": value, "item": item}, fields, namespace)))
            except InterpolationError as e:
                raise InterpolationError(f"Batch item {i}: {e.message}") from None
        resolved = self.resolve(replace(spec, prompt=prompts[0] if prompts else ""))
        workers = self.concurrency_for(resolved, concurrency)
        if dry_run:
            first = self.call(replace(spec, prompt=prompts[0]), dry_run=True) if prompts else None
            shown = first.request.describe() if first and first.request else ""
            return Text(f"{len(prompts)} calls at concurrency {workers}; the first:\n\n{shown}",
                        title=f"Dry run: batch on {resolved.endpoint}")
        return run_batch(lambda prompt: self.call(replace(spec, prompt=prompt)), prompts, workers,
                         progress=progress, label=resolved.endpoint)


def as_records(items: Any) -> list[Any]:
    """A list, tuple, pandas Series/DataFrame (rows as dicts) or any iterable, as a list."""
    if hasattr(items, "to_dict") and hasattr(items, "columns"):
        return items.to_dict("records")
    if hasattr(items, "tolist"):
        return items.tolist()
    if isinstance(items, str | bytes) or not hasattr(items, "__iter__"):
        raise ConfigError(f"--batch needs a list (or DataFrame) of items, not a {type(items).__name__}.")
    return list(items)
