"""What a cell or the panel does: resolve → call / stream / QA / batch → record → a Result.

The magics and the panel are views over one :class:`Runner`: they parse a line or read a form into a
:class:`~sm_magic.resolve.CallSpec`, call :meth:`Runner.run`, and show what comes back (a
:class:`~sm_magic.result.Result`, a :class:`~sm_magic.batch.BatchResult`, or a plan for a dry run).
Every call is recorded as it completes: a bounded summary in memory (the views' history) and, when
a journal is attached, a row on disk.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sm_magic.errors import ConfigError, SageMakerError
from sm_magic.resolve import CallSpec, Resolved, SageMaker
from sm_magic.result import Result

HISTORY_LIMIT = 200  # summaries kept in memory; the journal keeps everything
PROMPT_HEAD = 80
KEPT_PROMPT = 4000  # characters of a prompt kept in memory for the panel's Restore


def printable(text: str) -> str:
    """Text any frontend can serialize: lone surrogates become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8") if text and not text.isascii() else text


@dataclass
class HistoryEntry:
    """A bounded summary of one call (never the whole prompt or answer)."""

    when: float
    endpoint: str
    handler: str
    prompt: str
    latency: float | None
    tokens: int | None
    status: str
    values: dict[str, Any]

    def row(self) -> dict[str, Any]:
        head = printable(self.prompt[:PROMPT_HEAD + 1].replace("\n", " "))
        return {
            "time": time.strftime("%H:%M:%S", time.localtime(self.when)),
            "endpoint": self.endpoint, "handler": self.handler,
            "prompt": head[:PROMPT_HEAD] + ("…" if len(self.prompt) > PROMPT_HEAD else ""),
            "latency_ms": None if self.latency is None else round(self.latency * 1000),
            "tokens": self.tokens, "status": self.status,
        }


class Live(Protocol):
    """Where a streamed answer is shown as it arrives (a notebook display, the panel's answer box)."""

    def add(self, chunk: str) -> None: ...

    def stopped(self) -> bool: ...


@dataclass
class BatchPlan:
    """What a batch would send (a dry run)."""

    endpoint: str
    calls: int
    concurrency: int
    first: str  # the first request, described

    def describe(self) -> str:
        return f"{self.calls} calls at concurrency {self.concurrency}; the first:\n\n{self.first}"


class Runner:
    """The one path from a :class:`CallSpec` to an answer, shared by the magics and the panel."""

    def __init__(self, state: SageMaker):
        self.state = state
        self.history: deque[HistoryEntry] = deque(maxlen=HISTORY_LIMIT)
        self.last: Any = None
        self.listeners: list[Callable[[HistoryEntry], None]] = []
        self._lock = threading.Lock()

    # -- the one entry point -------------------------------------------------------------------------
    def run(self, spec: CallSpec, live: Live | None = None) -> Any:
        """Document QA, a batch, a dry run, a stream or one call, as the spec's values say.

        ``values["docs"]``, ``["batch"]`` and ``["template"]`` hold objects (the views look names up).
        """
        v = spec.values
        if v.get("docs") is not None:
            qa = {k: v.get(k) for k in ("template", "mode", "context_tokens", "concurrency")}
            if v.get("dry_run"):
                return self.plan(spec, v["docs"], **qa)
            return self.answer(spec, v["docs"], allow_partial=bool(v.get("allow_partial")), **qa)
        if v.get("batch") is not None:
            return self.batch(spec, v["batch"], v.get("namespace") or {}, column=v.get("column"),
                              concurrency=v.get("concurrency"), dry_run=bool(v.get("dry_run")))
        if v.get("dry_run"):
            return self.call(spec, dry_run=True)
        stream = v.get("stream")
        if stream is None:
            stream = self.state.stream
        if stream:
            return self.stream(spec, live)
        return self.call(spec)

    # -- calls -------------------------------------------------------------------------------------------
    def call(self, spec: CallSpec, *, dry_run: bool = False) -> Result:
        """One non-streamed call; recorded (errors too)."""
        from sm_magic.calls import invoke

        resolved = self.state.resolve(spec)
        started = time.time()
        try:
            result = invoke(resolved.session, resolved.endpoint, resolved.prompt, resolved.handler,
                            resolved.params, resolved.options, dry_run=dry_run)
        except SageMakerError as e:
            self.record(spec, resolved, started, None, type(e).__name__)
            raise
        if not dry_run:
            self.record(spec, resolved, started, result, "ok")
            self.state.remember_chat(resolved, result.text)
        return result

    def stream(self, spec: CallSpec, live: Live | None = None) -> Result:
        """A streamed call shown on ``live``; Ctrl-C or ``live.stopped()`` ends it and keeps the text.

        An error is raised after the call is recorded, with the partial Result on ``error.result``.
        """
        from sm_magic.calls import stream

        resolved = self.state.resolve(spec)
        started = time.time()
        s = stream(resolved.session, resolved.endpoint, resolved.prompt, resolved.handler, resolved.params,
                   resolved.options)
        error: SageMakerError | None = None
        try:
            for chunk in s:
                if live is not None:
                    live.add(chunk)
                    if live.stopped():
                        break
        except KeyboardInterrupt:
            pass
        except SageMakerError as e:
            error = e
        finally:
            s.close()
        result = s.result
        assert result is not None
        status = type(error).__name__ if error else result.status
        self.record(spec, resolved, started, result, status)
        if error is not None:
            error.result = result  # type: ignore[attr-defined]
            raise error
        self.state.remember_chat(resolved, result.text)
        return result

    def record(self, spec: CallSpec, resolved: Resolved, started: float, result: Result | None,
               status: str) -> None:
        """A summary in memory for the views (listeners are told; their failures never reach the call)."""
        prompt = spec.prompt if isinstance(spec.prompt, str) else str(spec.prompt[-1].get("content", ""))
        kept = {k: v for k, v in resolved.values.items() if isinstance(v, str | int | float | bool | list | dict)}
        template = spec.template if spec.template is not None else prompt
        entry = HistoryEntry(
            when=started, endpoint=resolved.endpoint, handler=resolved.handler.name, prompt=template[:KEPT_PROMPT],
            latency=result.latency if result else None, tokens=result.tokens if result else None,
            status=status, values=kept,
        )
        with self._lock:
            self.history.append(entry)
        for listener in list(self.listeners):
            try:
                listener(entry)
            except Exception:  # a view's failure must not cost the user their answer
                self.listeners.remove(listener)

    # -- document QA -----------------------------------------------------------------------------------
    def concurrency_for(self, resolved: Resolved, requested: int | None) -> tuple[int, Resolved]:
        """Requested, else sized to the endpoint's instances; the connection pool grows to match."""
        from sm_magic.endpoints import instance_count

        if requested is None:
            requested = max(self.state.concurrency, 4 * instance_count(resolved.session, resolved.endpoint))
        if requested < 1:
            raise ConfigError(f"--concurrency must be at least 1, not {requested}.")
        if requested > resolved.session.settings.max_pool_connections:
            changes = {**(resolved.alias.session_changes() if resolved.alias else {}),
                       "max_pool_connections": requested}
            resolved = replace(resolved, session=self.state.session_for(changes))
        return requested, resolved

    def _asker(self, spec: CallSpec, resolved: Resolved) -> Callable[[str], Result]:
        """Calls for the QA/batch items: the same resolution, the session sized for the pool."""
        values = {**spec.values, "chat": False, "stream": False, "dry_run": False, "docs": None, "batch": None}

        def ask(prompt: str) -> Result:
            return self._call_resolved(replace(spec, prompt=prompt, values=values, template=None), resolved)

        return ask

    def _call_resolved(self, spec: CallSpec, resolved: Resolved) -> Result:
        from sm_magic.calls import invoke

        started = time.time()
        item = replace(resolved, prompt=spec.prompt)
        try:
            result = invoke(item.session, item.endpoint, item.prompt, item.handler, item.params, item.options)
        except SageMakerError as e:
            self.record(spec, item, started, None, type(e).__name__)
            raise
        self.record(spec, item, started, result, "ok")
        return result

    def answer(self, spec: CallSpec, docs: Any, *, template: Any = None, mode: str | None = None,
               context_tokens: int | None = None, concurrency: int | None = None,
               allow_partial: bool = False) -> Result:
        """Answer the spec's prompt (the question) from ``docs``; map steps run concurrently.

        Ctrl-C during the map step stops at once (no answer from what finished)."""
        from sm_magic.batch import BatchResult, ItemError
        from sm_magic.qa import answer

        plan = self.plan(spec, docs, template=template, mode=mode, context_tokens=context_tokens)
        resolved = self.state.resolve(spec)
        self.check_budget(len(plan.prompts) if plan.mode == "map-reduce" else len(plan.chunks), resolved,
                          plan.describe())
        workers, resolved = self.concurrency_for(resolved, concurrency or resolved.values.get("concurrency"))
        ask = self._asker(spec, resolved)

        def ask_many(prompts: list[str]) -> list[Any]:
            batch = BatchResult(prompts, ask, workers, label="map").run()
            if batch.interrupted:
                raise KeyboardInterrupt
            return [o.error if isinstance(o, ItemError) else o for o in batch.outcomes]

        return answer(str(spec.prompt), docs, ask, ask_many, template=template, mode=plan.mode,
                      context_tokens=context_tokens or resolved.values["context_tokens"],
                      max_new_tokens=int(resolved.params.get("max_new_tokens") or 256), allow_partial=allow_partial,
                      plan=plan)

    def check_budget(self, calls: int, resolved: Resolved, plan: str) -> None:
        """Above ``max_calls``, a run waits for ``--yes`` (a real bill is one click away)."""
        budget = resolved.values.get("max_calls") or self.state.max_calls
        if calls > budget and not resolved.values.get("yes"):
            raise ConfigError(f"This run would make {calls} calls to {resolved.endpoint}, above the budget of "
                              f"{budget} (max_calls).", hint=f"Add --yes to go ahead, or raise the budget with "
                              f"`%sagemaker config max_calls={calls}`. The plan: {plan.splitlines()[0]}; "
                              f"{' '.join(plan.splitlines()[1:3])}")

    def plan(self, spec: CallSpec, docs: Any, *, template: Any = None, mode: str | None = None,
             context_tokens: int | None = None, concurrency: int | None = None) -> Any:
        """What document QA would send (a dry run): the mode and each call's prompt."""
        from sm_magic.qa import load_documents, make_plan, template_text

        resolved = self.state.resolve(spec)
        return make_plan(str(spec.prompt).strip(), load_documents(docs), template_text(template), mode or "auto",
                         context_tokens or resolved.values["context_tokens"],
                         int(resolved.params.get("max_new_tokens") or 256))

    # -- batches ---------------------------------------------------------------------------------------
    def batch(self, spec: CallSpec, items: Any, namespace: Mapping[str, Any], *, column: str | None = None,
              concurrency: int | None = None, dry_run: bool = False, progress: bool = True) -> Any:
        """The cell template once per item (``{text}`` is the item or its ``column``)."""
        from sm_magic.batch import BatchResult, batch_prompts

        template = spec.template if spec.template is not None else str(spec.prompt)
        prompts = batch_prompts(template, items, namespace, column)
        resolved = self.state.resolve(replace(spec, prompt=prompts[0] if prompts else ""))
        workers, resolved = self.concurrency_for(resolved, concurrency)
        if not dry_run:
            self.check_budget(len(prompts), resolved, f"{len(prompts)} prompts at concurrency {workers}")
        if dry_run:
            from sm_magic.calls import build_request

            first = build_request(resolved.endpoint, resolved.prompt, resolved.handler, resolved.params,
                                  resolved.options).describe() if prompts else ""
            return BatchPlan(resolved.endpoint, len(prompts), workers, first)
        batch = BatchResult(prompts, self._asker(spec, resolved), workers, progress, resolved.endpoint)
        return batch.run()
