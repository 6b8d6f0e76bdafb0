"""Jobs: many prompts as one journaled unit (a batch, a QA map step, an async batch), and resuming them.

Every item is journaled as it completes, with its job and index; a re-run with ``--resume`` (or
``%sagemaker resume JOB``) loads the finished items and calls only the rest. Async jobs record where
each answer will appear in S3, so a new kernel collects them without invoking again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sm_magic.calls import invoke
from sm_magic.errors import ConfigError, SageMakerError
from sm_magic.history import KEPT_PROMPT, HistoryEntry, printable
from sm_magic.journal import COMMIT_DELAY
from sm_magic.records import JobInfo
from sm_magic.resolve import CallSpec, Resolved
from sm_magic.result import Result

if TYPE_CHECKING:
    from sm_magic.runner import Runner


DURABLE_AFTER = COMMIT_DELAY  # job items slower than the journal's group commit wait for their own commit...
OUTLIER = 3.0  # ...when the endpoint's calls typically take that long, or this one took 3× the typical
KEPT_PROMPTS = 20_000_000  # characters of a batch's prompts kept with its job, so `resume JOB` needs no cell


def worth_a_wait(latency: float, typical: float) -> bool:
    """Whether a finished item is costly enough that its worker waits for its commit before the next.

    A slow endpoint's items are (a kill -9 then repeats only the calls in flight), and so is a long
    outlier on a fast one; an item that took 20 ms only because the client's threads were busy (a fast
    endpoint under a large batch) is not: redoing it costs the endpoint next to nothing, waiting costs the batch."""
    return latency >= DURABLE_AFTER and (typical >= DURABLE_AFTER or latency >= OUTLIER * typical)


class Asker:
    """``ask(index, prompt)``: one item of a job called and journaled (the call and one row, nothing else).

    A costly item (:func:`worth_a_wait`) is committed before its worker starts another, so a kill -9 never runs it
    twice: at once, or, with ``settle_later``, when the worker calls :meth:`settle` (the batch does so
    after giving the item's slot back, so the wait never idles a slot another worker could use).
    """

    def __init__(self, runner: Runner, resolved: Resolved, record: Callable[..., None] | None, job_id: int,
                 lean: bool, settle_later: bool):
        self.runner, self.resolved, self.record = runner, resolved, record
        self.job_id, self.lean, self.settle_later = job_id, lean, settle_later
        self._flush = runner.journal.flush if record is not None else None  # the journal the rows go to
        self._unsettled = threading.local()  # this worker's last item is slow and not yet committed
        self._typical: float | None = None  # the job's usual latency (a moving average over its items)

    def __call__(self, index: int, prompt: str) -> Result:
        r = self.resolved
        started = time.time()
        error: SageMakerError | None = None
        result: Result | None = None
        try:
            result = invoke(r.session, r.endpoint, prompt, r.handler, r.params, r.options)
        except SageMakerError as e:
            error = e
        if self.record is not None:
            slow = bool(self.job_id and result and worth_a_wait(result.latency, self._usual(result.latency)))
            self._journal(prompt, result, error, index, started, durable=slow and not self.settle_later)
            if slow and self.settle_later:
                self._unsettled.item = True
        if error is not None:
            raise error
        assert result is not None
        if self.lean:
            result.request = result.body = None
        return result

    def _usual(self, latency: float) -> float:
        """The job's typical latency before this item (the first: its own); this item then counts in it
        (threads race on a float: harmless)."""
        typical = self._typical
        if typical is None:
            typical = latency
        self._typical = 0.9 * typical + 0.1 * latency
        return typical

    def _journal(self, prompt: str, result: Result | None, error: SageMakerError | None, index: int,
                 started: float, durable: bool) -> None:
        try:
            self.record(printable(prompt), result.status if result else "error",  # type: ignore[misc]
                        result.text if result else None, result.usage if result else None,
                        result.latency if result else None, type(error).__name__ if error else None,
                        error.explain() if error else None, index if self.job_id else None, started,
                        durable=durable)
        except SageMakerError as e:
            self.record = None
            self.runner.journal_failed(e)

    def settle(self) -> None:
        """Return once this thread's last slow item is committed (nothing to wait for otherwise)."""
        if getattr(self._unsettled, "item", False) and self._flush is not None:
            self._unsettled.item = False
            try:
                self._flush()
            except SageMakerError as e:
                self.record = None
                self.runner.journal_failed(e)


class Jobs:
    """The runner's jobs: it records and resolves; this runs many prompts as one journaled unit."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def asker(self, resolved: Resolved, job_id: int = 0, lean: bool = False,
              settle_later: bool = False) -> Asker:
        """Calls for the items of a job: the same resolution, the session sized for the pool, each
        journaled with the job and its index as it completes. ``lean``: results keep the answer, not
        the request and response bytes (a batch can hold 100,000). ``settle_later``: a slow item's
        commit is waited for in :meth:`Asker.settle` (a batch's worker, its slot given back), not in
        the call."""
        return Asker(self.runner, resolved, self._recorder(resolved, job_id), job_id, lean, settle_later)

    def _recorder(self, resolved: Resolved, job_id: int) -> Callable[..., None] | None:
        """The journal's row writer for a job's items (None when the journal is off or cannot be opened)."""
        if not self.runner.state.log:
            return None
        try:
            journal = self.runner.journal
        except SageMakerError as e:
            self.runner.journal_failed(e)
            return None
        return journal.recorder(resolved.endpoint, handler=resolved.handler.name,
                                region=resolved.session.settings.region, params=resolved.params,
                                options=resolved.options.set(), job_id=job_id or None)

    def run(self, kind: str, spec: CallSpec, resolved: Resolved, prompts: list[str], workers: int,
             resume: bool, label: str, progress: bool = True, job: JobInfo | None = None) -> Any:
        """Run prompts as a journaled job; with ``resume``, items an earlier run of the same job finished
        are loaded from the journal instead of called; ``job``: that earlier run (resumed by its id)."""
        from sm_magic.batch import BatchResult
        from sm_magic.records import fingerprint

        journal = self.runner.journal
        found, job_id, notes = None, 0, []
        if journal.enabled and self.runner.state.log:
            key = fingerprint(resolved.endpoint, spec.template, resolved.params, resolved.options.set(), prompts)
            try:
                found = job or (journal.find_job(key) if resume else None)
                if found is not None:
                    _not_running_elsewhere(found)
                    journal.claim_job(found.id)
                job_id = found.id if found else journal.start_job(kind, resolved.endpoint, key, len(prompts),
                                                                  job_meta(spec, resolved, prompts))
            except ConfigError:
                raise
            except SageMakerError as e:  # a journal that cannot be written never stops the work
                notes.append(f"not journaled: {e.message}")
            if resume and found is None:
                notes.append(f"--resume found no earlier run of this cell (same endpoint, template, parameters "
                             f"and items), so all {len(prompts)} items were called")
        elif resume:
            notes.append("--resume needs the journal (`%sagemaker config log=on`): all items were called")
        ask = self.asker(resolved, job_id, lean=True, settle_later=True)
        batch = BatchResult(prompts, ask, workers, progress, label, indexed=True)
        batch.job_id, batch.notes, batch.settle = job_id or None, notes, ask.settle
        batch.retried = lambda: self._finish(journal, job_id, batch)  # `.retry()` finishing the job: it says so
        if found is not None:
            _load(batch, journal.finished_items(found.id), resolved.endpoint)
        started = time.time()
        batch.run()
        status = self._finish(journal, job_id, batch)
        self.runner.remember(HistoryEntry(  # one summary per job, not one per item
            started, resolved.endpoint, resolved.handler.name,
            f"{kind} of {len(prompts)}: {(spec.template or '')[:KEPT_PROMPT]}", batch.elapsed, None, status,
            resolved.settings, job=kind))
        return batch

    def resume(self, job_id: int, concurrency: int | None = None) -> Any:
        """Finish a journaled batch from its id (another kernel's too): only unfinished items are called."""
        journal = self.runner.journal
        job = journal.job(job_id) if journal.enabled else None
        if job is None:
            raise ConfigError(f"No job {job_id} in the journal ({journal.path}).",
                              hint="`%sagemaker jobs` lists them" + ("" if journal.enabled else "; logging is off"))
        _not_running_elsewhere(job)
        if job.kind == "async":
            return self.resume_async(job, concurrency)
        if job.kind != "batch" or "prompts" not in job.meta:
            raise ConfigError(f"Job {job_id} ({job.kind}) cannot be resumed by its id: its prompts were not kept.",
                              hint="Re-run its cell with --resume: finished items are loaded from the journal.")
        spec, resolved, workers = self._again(job, job.meta["prompts"], concurrency)
        return self.run("batch", spec, resolved, job.meta["prompts"], workers, True, resolved.endpoint, job=job)

    def _again(self, job: Any, prompts: list[str], concurrency: int | None) -> tuple[CallSpec, Resolved, int]:
        """A journaled job's call, resolved again from what it kept (its settings, never credentials)."""
        spec = CallSpec("", {**job.meta["values"], "endpoint": job.endpoint}, job.meta.get("template"))
        resolved = self.runner.state.resolve(replace(spec, prompt=prompts[0] if prompts else ""))
        workers, resolved = self.runner.concurrency_for(resolved, concurrency or resolved.values.get("concurrency"))
        return spec, resolved, workers

    def call_async(self, spec: CallSpec) -> Result:
        """One call through S3 and InvokeEndpointAsync, journaled as a one-item job (resumable by its id)."""
        from sm_magic.async_ import AsyncStopped
        from sm_magic.batch import ItemError

        resolved = self.runner.state.resolve(spec)
        batch = self.run_async(spec, resolved, [resolved.prompt], 1, progress=False, single=True)
        outcome = batch.outcomes[0]
        if isinstance(outcome, ItemError):
            raise outcome.error
        if outcome is None:  # Ctrl-C while waiting
            job = f" {batch.job_id}" if batch.job_id else ""
            raise AsyncStopped(f"Stopped waiting for the answer of endpoint '{resolved.endpoint}'; the request "
                               "is still queued or running there.", endpoint=resolved.endpoint,
                               hint=f"`%sagemaker resume{job or ' JOB'}` collects it later without sending it again.")
        self.runner.state.remember_chat(resolved, outcome.text)
        return outcome

    def run_async(self, spec: CallSpec, resolved: Resolved, prompts: list[Any], workers: int, *,
                   progress: bool = True, single: bool = False, job: Any = None) -> Any:
        """Prompts through S3 and InvokeEndpointAsync as a journaled job of kind "async": each submission
        (where its answer will appear) and each answer is recorded as it happens; with ``job``, the
        submitted items of that job are only collected, never sent again."""
        from sm_magic.async_ import AsyncSettings, AsyncStopped, inference_id, new_token
        from sm_magic.async_run import AsyncRun
        from sm_magic.batch import BatchResult
        from sm_magic.records import fingerprint

        journal = self.runner.journal
        if job is None:
            settings, token = AsyncSettings.from_values(resolved.values), new_token()
            submitted, finished, job_id = {}, {}, 0
            if journal.enabled:
                key = fingerprint(resolved.endpoint, spec.template, resolved.params, resolved.options.set(), prompts)
                meta = {**job_meta(spec, resolved, prompts), "token": token, "async": settings.meta()}
                job_id = journal.start_job("async", resolved.endpoint, key, len(prompts), meta)
        else:
            settings = AsyncSettings(**job.meta.get("async", {}))  # a resume waits at least the default
            settings.max_wait = max(settings.max_wait, AsyncSettings.max_wait)
            token, job_id = job.meta.get("token") or new_token(), job.id
            submitted, finished = journal.submissions(job.id), journal.finished_items(job.id)
        options = resolved.options if single else replace(resolved.options, inference_id=None)
        values = {**spec.values, "chat": False, "stream": False, "dry_run": False, "docs": None, "batch": None}
        tries: dict[int, int] = {}

        def on_submitted(index: int, submission: Any) -> None:
            if job_id:
                journal.record_submission(replace(submission, job_id=job_id, item=index))

        def on_done(index: int, outcome: Any, waiting: Any) -> None:
            if isinstance(outcome, AsyncStopped):  # still queued or running: resume collects it
                return
            item_spec = spec if single else replace(spec, prompt=prompts[index], values=values, template=None)
            item = replace(resolved, prompt=prompts[index])
            started = time.time() - (time.perf_counter() - waiting.started)
            where = (job_id, index) if job_id else None
            if isinstance(outcome, Result):
                if not single:  # a job can hold 100,000 answers: keep the answer, not the bytes
                    outcome.request = outcome.body = None
                self.runner.record(item_spec, item, started, outcome, "ok", None, where)
            else:
                self.runner.record(item_spec, item, started, None, type(outcome).__name__, outcome, where)

        run = AsyncRun(resolved.session, settings, workers, on_submitted, on_done)

        def start(index: int) -> Any:
            if index in submitted and index not in tries:
                return run.collect(index, resolved.endpoint, submitted[index], resolved.handler, resolved.params)
            tries[index] = tries.get(index, -1) + 1
            suffix = f"-r{tries[index]}" if tries[index] else ""  # a retry must not find the last failure object
            return run.submit(index, resolved.endpoint, prompts[index], resolved.handler, resolved.params, options,
                              inference_id(token, index) + suffix)

        futures = {index: start(index) for index in range(len(prompts)) if index not in finished}

        def run_one(index: int, prompt: Any) -> Result:
            future = futures.pop(index, None) or start(index)
            return future.result()

        batch = BatchResult(prompts, run_one, workers, progress, resolved.endpoint, indexed=True)
        batch.job_id = job_id or None
        _load(batch, finished, resolved.endpoint)
        try:
            batch.run()
        finally:
            run.close()
        self._finish(journal, job_id, batch)
        return batch

    def _finish(self, journal: Any, job_id: int, batch: Any) -> str:
        """The job's final status, recorded; a journal that cannot be written never costs the answers."""
        status = "interrupted" if batch.interrupted else ("partial" if batch.partial else "ok")
        if job_id:
            try:
                journal.finish_job(job_id, status)
            except SageMakerError as e:
                batch.notes.append(f"not journaled: {e.message}")
                self.runner.journal_failed(e)
        return status

    def resume_async(self, job: Any, concurrency: int | None = None) -> Any:
        """Collect an async job's answers from S3 (another kernel's too); unsent items are sent."""
        prompts = job.meta.get("prompts")
        if prompts is None:
            journal = self.runner.journal
            unsent = set(range(job.total or 0)) - set(journal.submissions(job.id)) - set(journal.finished_items(job.id))
            if unsent:
                raise ConfigError(f"Job {job.id} has {len(unsent)} item(s) that were never sent, and its prompts were "
                                  "not kept.", hint="Re-run its cell: finished items are loaded from the journal.")
            prompts = [""] * (job.total or 0)
        spec, resolved, workers = self._again(job, prompts, concurrency)
        return self.run_async(spec, resolved, prompts, workers, job=job)


def _not_running_elsewhere(job: Any) -> None:
    """Resuming a job its own kernel is still running would call its items twice."""
    if job.running_elsewhere:
        raise ConfigError(f"Job {job.id} is still running in another kernel (process {job.meta['pid']}): resuming "
                          "it now would call its unfinished items twice.",
                          hint="Wait for it to finish, or interrupt or shut down that kernel, then resume.")


def _load(batch: Any, finished: dict[int, Any], endpoint: str) -> None:
    """Items an earlier run finished, from their journal rows, into the batch (they are not called again)."""
    for index, record in finished.items():
        if 0 <= index < len(batch):
            batch.load(index, Result(record.answer or "", endpoint, record.handler or "", latency=record.latency or 0.0,
                                     usage=dict(record.usage or {}) or None, params=dict(record.params or {})))


def job_meta(spec: CallSpec, resolved: Resolved, prompts: list[str]) -> dict[str, Any]:
    """What a job keeps to be resumed by id: its settings (never credentials) and, if not huge, its prompts."""

    from sm_magic.records import owner

    values = dict(resolved.settings)  # defaults, alias and the cell's flags as merged: resume needs no alias
    values.update(handler=resolved.handler.name, model_kwargs=resolved.params)
    meta: dict[str, Any] = {"handler": resolved.handler.name, "template": spec.template, "values": values,
                            **owner()}
    if sum(map(len, prompts)) <= KEPT_PROMPTS:
        meta["prompts"] = prompts
    return meta
