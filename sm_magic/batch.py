"""Many calls with bounded, adaptive concurrency: results in input order, failures kept per item.

Work is submitted through a window (never more than the current limit in flight, so 100,000 items
cost no more bookkeeping than 100), each completion is O(1), and the limit adapts to the endpoint's
capacity: a throttled call halves it (at most once per round trip) and is queued again; successes
raise it back by one per round, up to the requested concurrency (AIMD, as TCP does). Ctrl-C stops
issuing new calls; what finished is kept and can be re-run with :meth:`BatchResult.retry`.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import threading
import time
from collections import ChainMap, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sm_magic.errors import ConfigError, SageMakerError, Throttled, translate
from sm_magic.result import Result

PREVIEW_ROWS = 20
ANSWER_WIDTH = 72  # characters of each answer or error in the preview table
THROTTLE_STREAK = 50  # throttles in a row with no answer between them...
GIVE_UP_AFTER = 30.0  # ...for this many seconds: the endpoint takes nothing, the batch stops and says so
DECREASE = 0.9  # the limit's largest factor on throttling (it falls to what the endpoint took)
PLATEAU = 10  # how much slower the limit climbs through the level the endpoint last refused
SETTLE = 2.0  # seconds Ctrl-C waits for the calls in flight before showing what finished
GAP_MAX = 0.1  # seconds between call starts at most after throttling (answers shrink it: back to 0 within ~1 s)


@dataclass
class ItemError:
    """A failed item: its position, input and the error."""

    index: int
    item: Any
    error: SageMakerError

    def __str__(self) -> str:
        return f"#{self.index}: {type(self.error).__name__}: {self.error.explain()}"


Outcome = Result | ItemError | None  # None: not run (interrupted before it started)


class Limiter:
    """Additive-increase, multiplicative-decrease limit on calls in flight.

    The level the endpoint last refused is remembered: the limit climbs back to just below it at the
    usual pace and probes it again only after :data:`PLATEAU` times as many answers, so a batch against
    an endpoint at capacity runs at that capacity instead of being refused every few calls (a level
    passed without a refusal is forgotten: the endpoint may have grown).
    """

    def __init__(self, ceiling: int):
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.throttles = 0
        self.lowest = self.ceiling
        self.refused: int | None = None  # the level at which the endpoint last said no
        self.gap = 0.0  # seconds between starts: grows on throttling (rate limits), shrinks on answers
        self.next_start = 0.0
        self._last_cut = 0.0

    @property
    def allowed(self) -> int:
        return max(1, int(self.limit))

    def success(self) -> None:
        self.gap = self.gap * 0.9 if self.gap > 0.001 else 0.0
        if self.limit < self.ceiling:
            step = 1 / self.limit
            if self.refused is not None and self.limit + 1 >= self.refused:  # the next level was refused
                step /= PLATEAU
            self.limit = min(self.ceiling, self.limit + step)
            if self.refused is not None and self.limit >= self.refused + 1:
                self.refused = None

    def throttled(self, round_trip: float, in_flight: int) -> None:
        """Cut once per round trip (the calls already in flight were sent at the old limit), to what the
        endpoint was taking when it said no (the others in flight), at most by :data:`DECREASE`."""
        self.throttles += 1
        now = time.monotonic()
        if now - self._last_cut >= round_trip:
            self.refused = self.allowed
            self.limit = max(1.0, min(self.limit * DECREASE, float(in_flight - 1)) if in_flight > 1
                             else self.limit * DECREASE)
            self.gap = min(GAP_MAX, max(self.gap * 2, 0.005))  # a rate limit is not a concurrency limit
            self.lowest = min(self.lowest, self.allowed)
            self._last_cut = now


class BatchResult(Sequence[Outcome]):
    """The outcomes of a batch, in input order. ``texts`` has None where an item failed."""

    def __init__(self, items: list[Any], run_one: Callable[[Any], Result], concurrency: int,
                 progress: bool = True, label: str = "sagemaker", indexed: bool = False):
        self.items = items
        self.outcomes: list[Outcome] = [None] * len(items)
        self.run_one = run_one
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.label = label
        self.indexed = indexed  # run_one(index, item) instead of run_one(item)
        self.interrupted = False
        self.elapsed = 0.0
        self.job_id: str | None = None
        self.resumed = 0  # items loaded from the journal instead of called
        self.gave_up = ""  # why the batch stopped early, if it did
        self.notes: list[str] = []  # what the user should know about this run
        self.limiter = Limiter(self.concurrency)
        self.settle: Callable[[], None] | None = None  # a worker's wait after its item, its slot given back
        self.retried: Callable[[], None] | None = None  # told when a retry ends (a job records its status)
        self._ok = self._failed = 0
        self._run: _Run | None = None  # the last run: its calls may still be in flight after a Ctrl-C
        self._flight_note: str | None = None

    # -- Sequence ----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Outcome:  # type: ignore[override]
        return self.outcomes[index]

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def ok(self) -> list[Result]:
        return [o for o in self.outcomes if isinstance(o, Result)]

    @property
    def failed(self) -> list[ItemError]:
        return [o for o in self.outcomes if isinstance(o, ItemError)]

    @property
    def pending(self) -> list[int]:
        return [i for i, o in enumerate(self.outcomes) if o is None]

    @property
    def texts(self) -> list[str | None]:
        return [o.text if isinstance(o, Result) else None for o in self.outcomes]

    @property
    def partial(self) -> bool:
        return self._ok < len(self.outcomes)

    # -- running -----------------------------------------------------------------------------
    def _call(self, index: int) -> Any:
        try:
            item = self.items[index]
            return self.run_one(index, item) if self.indexed else self.run_one(item)
        except SageMakerError as e:
            return e
        except Exception as e:
            return translate(e)

    def run(self, indices: list[int] | None = None) -> BatchResult:
        """Run the given items (default: every item not finished yet); returns self.

        Workers take the next item themselves while the calls in flight are under the limiter's limit,
        so a completion costs a lock, not a hand-off through this thread; this thread only moves the
        progress bar (10 times a second) and catches Ctrl-C.
        """
        from tqdm.auto import tqdm

        busy = self._run.running if self._run is not None else set()  # they land in their slots when done
        if indices is None:
            indices = [i for i, o in enumerate(self.outcomes) if o is None]
        indices = [i for i in indices if i not in busy]
        run = self._run = _Run(self, deque(indices))
        if self._flight_note in self.notes:
            self.notes.remove(self._flight_note)
        self.interrupted = False
        start = time.perf_counter()
        bar = tqdm(total=len(indices), desc=self.label, disable=not self.progress or not indices, leave=True)
        workers = [threading.Thread(target=run.work, name=f"sm-magic-batch-{i}", daemon=True)
                   for i in range(min(self.concurrency, len(indices)))]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.1)
                    bar.update(run.settled - bar.n)
                    if run.failed_now != self._failed:
                        self._failed = run.failed_now
                        bar.set_postfix(failed=self._failed, refresh=False)
        except KeyboardInterrupt:
            self.interrupted = True
            run.stop()  # calls in flight finish into their slots; nothing new starts
            run.settle(SETTLE)  # a moment for them, so the table shown is the batch's final state
            if run.in_flight:
                self._flight_note = (f"{run.in_flight} call(s) were still in flight when interrupted: their "
                                     "answers land in this result when they arrive (a retry leaves them be)")
                self.notes.append(self._flight_note)
        finally:
            if not run.running:  # nothing will land later: no reference to keep
                self._run = None
            self._failed = run.failed_now
            bar.update(run.settled - bar.n)
            bar.close()
            self.elapsed = time.perf_counter() - start
            if len(indices) >= 1000:
                _give_memory_back()
        return self

    def load(self, index: int, result: Result) -> None:
        """A result finished earlier (resume): kept without calling the endpoint."""
        self.outcomes[index] = result
        self._ok += 1
        self.resumed += 1

    def retry(self, concurrency: int | None = None) -> BatchResult:
        """Re-run the failed and never-run items only; finished results are kept."""
        if concurrency:
            self.concurrency = concurrency
            self.limiter = Limiter(concurrency)
        busy = self._run.running if self._run is not None else set()
        todo = [i for i, o in enumerate(self.outcomes) if not isinstance(o, Result) and i not in busy]
        self._failed -= sum(1 for i in todo if self.outcomes[i] is not None)
        self.run(todo)
        if self.retried is not None:
            self.retried()
        return self

    # -- display -------------------------------------------------------------------------------
    def summary(self) -> str:
        total = len(self)
        parts = [f"{self._ok}/{total} ok"]
        if self._failed:
            parts.append(f"{self._failed} failed")
        missing = total - self._ok - self._failed
        if missing:
            parts.append(f"{missing} not run" + (" (interrupted)" if self.interrupted else ""))
        if self.resumed:
            parts.append(f"{self.resumed} from the journal")
        parts.append(f"{self.elapsed:.2f} s at concurrency {self.concurrency}")
        if self.limiter.throttles:
            parts.append(f"throttled {self.limiter.throttles}× (limit went down to {self.limiter.lowest})")
        if self.gave_up:
            parts.append(self.gave_up)
        parts += self.notes
        if self._failed or missing:
            parts.append("re-run the rest with `.retry()` or `%sagemaker retry VAR`")
        return " · ".join(parts)

    def rows(self, limit: int = PREVIEW_ROWS, width: int = ANSWER_WIDTH) -> list[dict[str, Any]]:
        """The first ``limit`` items as table rows: index, status, the answer or the error (cut to ``width``)."""
        rows = []
        for i, outcome in enumerate(self.outcomes[:limit]):
            if isinstance(outcome, Result):
                rows.append({"#": i, "status": outcome.status, "answer": _cut(outcome.text, width),
                             "ms": round(outcome.latency * 1000)})
            elif isinstance(outcome, ItemError):
                error = outcome.error  # the container's own words first (a ModelError's original message)
                said = getattr(error, "original_message", "") or error.explain()
                rows.append({"#": i, "status": type(error).__name__, "answer": _cut(said, width), "ms": None})
            else:
                rows.append({"#": i, "status": "not run", "answer": "", "ms": None})
        return rows

    def _more(self) -> str:
        hidden = len(self) - PREVIEW_ROWS
        return f"... {hidden} more (every answer: .texts; every error: .failed)" if hidden > 0 else ""

    def _repr_markdown_(self) -> str:
        from sm_magic.table import Table

        table = Table(self.rows(), empty="(no items)")._repr_markdown_()
        more = f"\n\n{self._more()}" if self._more() else ""
        warn = "⚠ " if self.partial else ""
        return f"{warn}**Batch**: {self.summary()}\n\n{table}{more}"

    def __repr__(self) -> str:
        """A numbered table of answers or errors (the first rows, long texts cut) under the summary."""
        from sm_magic.table import Table

        more = f"\n{self._more()}" if self._more() else ""
        return f"Batch: {self.summary()}\n{Table(self.rows(), empty='(no items)')!r}{more}"


def _cut(text: str, width: int) -> str:
    """One line of at most ``width`` characters: whitespace runs become one space, a cut ends with …."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


class _Run:
    """One run of a batch: the queue of items, the throttled ones waiting, and the workers' shared state."""

    def __init__(self, batch: BatchResult, todo: deque[int]):
        self.batch = batch
        self.todo = todo
        self.waiting: list[tuple[float, int]] = []  # throttled items: (not before, index), a heap
        self.retries: dict[int, int] = {}
        self.in_flight = 0
        self.running: set[int] = set()  # the items whose calls are in flight
        self.settled = 0
        self.failed_now = batch._failed
        self.round_trip = 0.05
        self.streak = 0
        self.answered = time.monotonic()  # when the endpoint last answered (or the run began)
        self.stopped = False
        self.cond = threading.Condition(threading.Lock())

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the calls in flight (not Thread.join: after a Ctrl-C it can
        return at once while the thread still runs)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.in_flight and (left := deadline - time.monotonic()) > 0:
                self.cond.wait(min(left, 0.05))

    def _next(self) -> int | None:
        """The next item this worker may start, waiting while the limit is reached; None when done."""
        limiter = self.batch.limiter
        with self.cond:
            while not self.stopped:
                now = time.monotonic()
                while self.waiting and self.waiting[0][0] <= now:
                    self.todo.appendleft(heapq.heappop(self.waiting)[1])
                if self.todo and self.in_flight < limiter.allowed and now >= limiter.next_start:
                    self.in_flight += 1
                    limiter.next_start = now + limiter.gap
                    index = self.todo.popleft()
                    self.running.add(index)
                    return index
                if not self.todo and not self.waiting:
                    return None
                due = [t - now for t in (limiter.next_start, self.waiting[0][0] if self.waiting else 0) if t > now]
                self.cond.wait(min([0.05, *due]))
            return None

    def work(self) -> None:
        from sm_magic.session import throttles_surface

        with throttles_surface():  # the limiter, not botocore's backoff, answers throttling in this thread
            self._work()

    def _work(self) -> None:
        settle = self.batch.settle
        while (index := self._next()) is not None:
            self._account(index, self.batch._call(index))
            if settle is not None:  # its slot is free for another worker meanwhile
                settle()

    def _account(self, index: int, outcome: Any) -> None:
        """An item's outcome in its slot (a throttled one queued again), its call's slot given back."""
        batch, limiter = self.batch, self.batch.limiter
        with self.cond:
            self.in_flight -= 1
            self.running.discard(index)
            throttled = isinstance(outcome, Throttled)
            now = time.monotonic()
            if throttled:
                self.streak += 1
                limiter.throttled(self.round_trip, self.in_flight + 1)
            else:
                self.streak, self.answered = 0, now
            if (self.streak >= THROTTLE_STREAK and now - self.answered >= GIVE_UP_AFTER
                    and not self.stopped):  # a round of refusals at high concurrency is not this
                batch.gave_up = (f"the endpoint throttled every call for {now - self.answered:.0f} s "
                                 f"({self.streak} in a row), so the batch stopped; retry later or with a "
                                 "lower --concurrency")
                self.stopped = True
                self.cond.notify_all()
            if throttled and not self.stopped:  # queued again: only a batch that gives up fails it
                tries = self.retries[index] = self.retries.get(index, 0) + 1
                delay = min(1.0, 0.02 * 2 ** min(tries, 6)) * (0.5 + random.random())
                heapq.heappush(self.waiting, (now + delay, index))
                return
            if isinstance(outcome, Result):
                limiter.success()
                self.round_trip = 0.8 * self.round_trip + 0.2 * outcome.latency
                batch._ok += 1
                batch.items[index] = None  # a finished item's prompt is not kept (retry needs the rest)
            else:
                outcome = ItemError(index, batch.items[index], outcome)
                self.failed_now += 1
            batch.outcomes[index] = outcome
            self.settled += 1
            self.cond.notify()


def return_large_frees() -> None:
    """Large blocks (prompts, bodies) from their own mappings, given back to the system when freed.

    glibc raises its mmap threshold each time it frees a mapped block, after which megabyte prompts
    live in the heap and a freed batch keeps the kernel's memory; a fixed threshold keeps them mapped.
    """
    _glibc("mallopt", -3, 256 * 1024)  # M_MMAP_THRESHOLD


def _give_memory_back() -> None:
    """After a large job, return freed heap to the system (glibc keeps it otherwise)."""
    _glibc("malloc_trim", 0)


def _glibc(function: str, *args: int) -> None:
    """Call a glibc memory function; elsewhere (musl, macOS, Windows) there is nothing to do."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), function)(*args)


def run_batch(run_one: Callable[[Any], Result], items: list[Any], concurrency: int,
              progress: bool = True, label: str = "sagemaker") -> BatchResult:
    """Run ``run_one`` over ``items`` with at most ``concurrency`` calls in flight."""
    return BatchResult(list(items), run_one, concurrency, progress, label).run()


# -- building the prompts -----------------------------------------------------------------------------
def as_records(items: Any) -> list[Any]:
    """A list, tuple, pandas Series/DataFrame (rows as dicts) or another sequence, as a list."""
    if hasattr(items, "to_dict") and hasattr(items, "columns"):
        return items.to_dict("records")
    if hasattr(items, "tolist"):
        return items.tolist()
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence | Iterator | set | frozenset):
        kind = type(items).__name__
        hint = " (for a dict, pass list(d.values()) or list(d.items()))" if isinstance(items, Mapping) else ""
        raise ConfigError(f"--batch needs a list, tuple, Series or DataFrame of items, not a {kind}{hint}.")
    return list(items)


def batch_prompts(template: str, items: Any, namespace: Mapping[str, Any], column: str | None = None) -> list[str]:
    """The cell template filled once per item: ``{text}`` is the item (or its ``column``), ``{item}`` the
    item, and a record's own fields by name."""
    from sm_magic.interpolate import InterpolationError, field_names, interpolate, plain_fields

    records = as_records(items)
    names = set(field_names(template))
    record_fields = set().union(*(r.keys() for r in records if isinstance(r, Mapping)))
    if records and not names & {"text", "item", *record_fields}:
        raise ConfigError("The cell does not use the item: every call would send the same prompt. Write {text} "
                          "where each item goes (or {item}, or a record's field such as {question}).")
    wanted = names & record_fields - {"text", "item"}  # fields some records have: every one must
    plain = plain_fields(template)  # parsed once: 100,000 items are not 100,000 parses
    prompts = []
    for i, item in enumerate(records):
        if column is not None:
            if not isinstance(item, Mapping) or column not in item:
                raise ConfigError(f"Batch item {i} has no field '{column}'.")
            value = item[column]
        else:
            value = item
        fields = item if isinstance(item, Mapping) else {}
        if wanted and not wanted <= fields.keys():  # else a notebook variable of that name would fill it
            lacking = ", ".join(sorted(wanted - fields.keys()))
            raise ConfigError(f"Batch item {i} has no field {lacking}, which other items have: give every item "
                              "the field (a notebook variable of that name would otherwise be used for some).")
        try:
            if plain is not None:
                try:
                    prompts.append(_fill(plain, value, item, fields, namespace))
                    continue
                except Exception:  # a missing name, an object that cannot be shown: said below
                    pass
            prompts.append(interpolate(template, ChainMap({"text": value, "item": item}, fields, namespace)))
        except InterpolationError as e:
            raise InterpolationError(f"Batch item {i}: {e.message}") from None
    return prompts


def _fill(pairs: list[tuple[str, str | None]], value: Any, item: Any, fields: Mapping[str, Any],
          namespace: Mapping[str, Any]) -> str:
    """A plain template (:func:`~sm_magic.interpolate.plain_fields`) filled for one item, as
    :func:`~sm_magic.interpolate.interpolate` would: the item, then its fields, then the namespace."""
    out = []
    for literal, name in pairs:
        out.append(literal)
        if name is not None:
            found = value if name == "text" else item if name == "item" else \
                fields[name] if name in fields else namespace[name]
            out.append(found if type(found) is str else format(found, ""))
    return "".join(out)
