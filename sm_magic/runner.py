"""What a cell or the panel does: resolve → call / stream / QA / batch → record → a Result.

The magics and the panel are views over one :class:`Runner`: they parse a line or read a form into a
:class:`~sm_magic.resolve.CallSpec`, call :meth:`Runner.run`, and show what comes back (a
:class:`~sm_magic.result.Result`, a :class:`~sm_magic.batch.BatchResult`, or a plan for a dry run).
Every call is recorded as it completes: a bounded summary in memory (the views' history) and, when
a journal is attached, a row on disk.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from sm_magic.batch import BatchResult, ItemError, batch_prompts, return_large_frees
from sm_magic.calls import invoke, stream
from sm_magic.errors import ConfigError, SageMakerError, ValidationFailed
from sm_magic.history import HISTORY_LIMIT, KEPT_PROMPT, HistoryEntry, printable
from sm_magic.jobs import Jobs
from sm_magic.journal import FILENAME, Journal
from sm_magic.records import CallRecord, home
from sm_magic.resolve import CallSpec, Resolved, SageMaker
from sm_magic.result import Result


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
        self._last: Any = None
        self.listeners: list[Callable[[HistoryEntry], None]] = []
        self._lock = threading.Lock()
        self._journal: Any = None
        self._journal_key: tuple = ()
        self._embeddings: dict[tuple, tuple[Any, Any]] = {}
        return_large_frees()  # `del answers` gives a large batch's memory back
        self.jobs = Jobs(self)

    @property
    def last(self) -> Any:
        """The last outcome a view showed. A batch is held weakly: `del answers` gives its memory back."""
        last = self._last
        return last() if isinstance(last, weakref.ref) else last

    @last.setter
    def last(self, value: Any) -> None:
        self._last = weakref.ref(value) if isinstance(value, BatchResult) else value

    @property
    def journal(self) -> Any:
        """The call journal under the sm_magic home (opened on first use; a disabled one when ``log`` is off)."""
        key = (self.state.home, os.environ.get("SM_MAGIC_HOME"), bool(self.state.log))
        current = self._journal
        if current is not None and self._journal_key == key:
            return current
        path = (Path(self.state.home).expanduser() if self.state.home else home()) / FILENAME
        with self._lock:
            current = self._journal
            if current is None or current.path != path or current.enabled != key[2]:
                if current is not None:
                    current.close()
                self._journal = Journal(path, enabled=key[2])
            self._journal_key = key
            return self._journal

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
        resolved = self.state.resolve(spec)
        if self.asynchronous(resolved):
            return self.jobs.call_async(spec)
        try:
            if resolved.values.get("stream"):  # the cell's flag, else the configured default
                return self.stream(spec, live, resolved)
            return self.call(spec, resolved=resolved)
        except ValidationFailed:  # a real-time call to an async endpoint is refused: take the async path
            if resolved.values.get("async_") is None and self.state.is_async(resolved.session, resolved.endpoint,
                                                                             ask=True):
                return self.jobs.call_async(spec)
            raise

    def asynchronous(self, resolved: Resolved) -> bool:
        """--async (or an alias's ``async``) decides; else whether the endpoint is known to be async."""
        chosen = resolved.values.get("async_")
        return bool(chosen) if chosen is not None else self.state.is_async(resolved.session, resolved.endpoint)

    # -- calls -------------------------------------------------------------------------------------------
    def call(self, spec: CallSpec, *, dry_run: bool = False, resolved: Resolved | None = None) -> Result:
        """One non-streamed call; recorded (errors too). ``resolved``: the spec, already resolved."""
        resolved = resolved or self.state.resolve(spec)
        started = time.time()
        try:
            result = invoke(resolved.session, resolved.endpoint, resolved.prompt, resolved.handler,
                            resolved.params, resolved.options, dry_run=dry_run)
        except SageMakerError as e:
            self.record(spec, resolved, started, None, type(e).__name__, e)
            raise
        if not dry_run:
            self.record(spec, resolved, started, result, "ok")
            self.state.remember_chat(resolved, result.text)
        return result

    def stream(self, spec: CallSpec, live: Live | None = None, resolved: Resolved | None = None) -> Result:
        """A streamed call shown on ``live``; Ctrl-C or ``live.stopped()`` ends it and keeps the text.

        An error is raised after the call is recorded, with the partial Result on ``error.result``.
        """
        resolved = resolved or self.state.resolve(spec)
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
        self.record(spec, resolved, started, result, status, error)
        if error is not None:
            error.result = result  # type: ignore[attr-defined]
            raise error
        self.state.remember_chat(resolved, result.text)
        return result

    def record(self, spec: CallSpec, resolved: Resolved, started: float, result: Result | None,
               status: str, error: SageMakerError | None = None, job: tuple[int, int] | None = None) -> None:
        """The call in the journal (when ``log`` is on) and a summary in memory for the views (listeners
        are told; their failures never reach the call)."""
        prompt = spec.prompt if isinstance(spec.prompt, str) else str(spec.prompt[-1].get("content", ""))
        template = spec.template if spec.template is not None else prompt
        if self.state.log:
            self._journal_call(spec, resolved, started, result, error, job, prompt)
        entry = HistoryEntry(
            when=started, endpoint=resolved.endpoint, handler=resolved.handler.name, prompt=template[:KEPT_PROMPT],
            latency=result.latency if result else None, tokens=result.tokens if result else None,
            status=status, values=resolved.settings, length=len(template),
        )
        self.remember(entry)

    def remember(self, entry: HistoryEntry) -> None:
        with self._lock:
            self.history.append(entry)
        for listener in list(self.listeners):
            try:
                listener(entry)
            except Exception:  # a view's failure must not cost the user their answer
                self.listeners.remove(listener)

    def _journal_call(self, spec: CallSpec, resolved: Resolved, started: float, result: Result | None,
                      error: SageMakerError | None, job: tuple[int, int] | None, prompt: str) -> None:
        record = CallRecord(
            resolved.endpoint, printable(prompt), status="error" if error else (result.status if result else "error"),
            answer=result.text if result else None, handler=resolved.handler.name,
            region=resolved.session.settings.region, params=resolved.params, options=resolved.options.set(),
            usage=result.usage if result else None, latency=result.latency if result else None,
            first_token=result.first_token if result else None,
            error_class=type(error).__name__ if error else None, error_message=error.explain() if error else None,
            job_id=job[0] if job else None, item=job[1] if job else None, template=spec.template, time=started)
        self.write_record(record)

    def write_record(self, record: Any, durable: bool = False) -> None:
        try:
            self.journal.record_call(record, durable)
        except SageMakerError as e:
            self.journal_failed(e)

    def journal_failed(self, error: SageMakerError) -> None:
        """The journal must never cost an answer: say so once, stop logging."""
        if self.state.log:
            self.state.log = False
            import warnings

            warnings.warn(f"sm_magic: calls are no longer journaled: {error.explain()}", stacklevel=3)

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

    def resume(self, job_id: int, concurrency: int | None = None) -> Any:
        """Finish a journaled job from its id (another kernel's too): only unfinished items are called."""
        return self.jobs.resume(job_id, concurrency)

    def answer(self, spec: CallSpec, docs: Any, *, template: Any = None, mode: str | None = None,
               context_tokens: int | None = None, concurrency: int | None = None,
               allow_partial: bool = False) -> Result:
        """Answer the spec's prompt (the question) from ``docs``; map steps run concurrently.

        Ctrl-C during the map step stops at once (no answer from what finished)."""
        from sm_magic.qa import answer

        plan = self.plan(spec, docs, template=template, mode=mode, context_tokens=context_tokens)
        resolved = self.state.resolve(spec)
        self.check_budget(plan.calls, resolved, plan.describe())
        workers, resolved = self.concurrency_for(resolved, concurrency or resolved.values.get("concurrency"))
        single = self.jobs.asker(resolved)

        def ask(prompt: str) -> Result:
            return single(0, prompt)

        def ask_many(prompts: list[str]) -> list[Any]:  # a retry after a failure or Ctrl-C redoes only the rest
            batch = self.jobs.run("qa-map", spec, resolved, prompts, workers, resume=True, label="map")
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
        """What document QA sends: the mode (and why), the chunks, each call's prompt. A retrieval plan
        is filled here (chunks embedded as needed, the best K found), so a dry run shows what is sent."""
        from sm_magic.qa import load_documents, make_plan, template_text

        resolved = self.state.resolve(spec)
        values = resolved.values
        if values.get("retrieve") and not mode:
            mode = "retrieve"
        retrieve_k = values.get("retrieve") or (4 if values.get("embeddings") else None)
        question, text = str(spec.prompt).strip(), template_text(template)
        plan = make_plan(question, load_documents(docs), text, mode or "auto",
                         context_tokens or values["context_tokens"], int(resolved.params.get("max_new_tokens") or 256),
                         retrieve_k)
        if plan.mode == "retrieve":
            from sm_magic.retrieval import retrieve

            embeddings, index = self.embeddings_for(resolved)

            def budget(requests: int, texts: int) -> None:  # embedding requests are billed calls too
                self.check_budget(requests, replace(resolved, endpoint=embeddings.endpoint_name),
                                  f"embed {texts} chunks the index lacks in {requests} requests")

            retrieve(plan, question, text, embeddings, index, budget=budget)
        return plan

    def embeddings_for(self, resolved: Resolved) -> tuple[Any, Any]:
        """The embeddings endpoint named by ``embeddings`` (an alias works) and its vector index, made once."""
        from sm_magic.embeddings import SagemakerEndpointEmbeddings
        from sm_magic.vectors import VectorIndex

        name = resolved.values.get("embeddings")
        if not name:
            raise ConfigError("Retrieval needs an embeddings endpoint: add --embeddings ENDPOINT, or set one with "
                              "`%sagemaker config embeddings=ENDPOINT` (or in the alias).")
        values, alias = self.state.values_for({}, endpoint=name)
        session = self.state.session_for(alias.session_changes() if alias else {})
        handler = resolved.values.get("embeddings_handler") or values.get("embeddings_handler") or "auto"
        if handler == "auto":  # detected: TEI's image, JumpStart's text embedding, else TEI's format
            found = self.state.detect(session, values["endpoint"]).handler
            handler = {"embedding": "jumpstart-embedding"}.get(found, found)
            handler = handler if handler in ("tei-embedding", "jumpstart-embedding") else "tei-embedding"
        key = (id(session), values["endpoint"], handler)
        with self._lock:
            if key not in self._embeddings:
                embeddings = SagemakerEndpointEmbeddings(endpoint_name=values["endpoint"], session=session,
                                                         content_handler=handler)
                path = (Path(self.state.home).expanduser() if self.state.home else home()) / "embeddings.sqlite"
                self._embeddings[key] = (embeddings, VectorIndex(path, space=embeddings.identity))
            return self._embeddings[key]

    # -- batches ---------------------------------------------------------------------------------------
    def batch(self, spec: CallSpec, items: Any, namespace: Mapping[str, Any], *, column: str | None = None,
              concurrency: int | None = None, dry_run: bool = False, progress: bool = True) -> Any:
        """The cell template once per item (``{text}`` is the item or its ``column``); a journaled job."""

        if spec.values.get("stream"):  # the cell's own flag (a configured default streams single calls only)
            raise ConfigError("--stream shows one answer as it arrives; a batch shows each answer when it is "
                              "complete.", hint="Drop --stream from the batch's line.")
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
        if self.asynchronous(resolved):
            return self.jobs.run_async(spec, resolved, prompts, workers, progress=progress)
        return self.jobs.run("batch", spec, resolved, prompts, workers, bool(spec.values.get("resume")),
                         resolved.endpoint, progress)


