"""Many calls with bounded concurrency: results in input order, failures kept per item.

Ctrl-C stops issuing new calls; calls already running finish into their slots. Throttling is
absorbed by botocore's adaptive retry (the client slows down); what still fails is recorded
and can be re-run with :meth:`BatchResult.retry`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from sm_magic.errors import SageMakerError, translate
from sm_magic.result import Result

PREVIEW_ROWS = 20


@dataclass
class ItemError:
    """A failed item: its position, input and the error."""

    index: int
    item: Any
    error: SageMakerError

    def __str__(self) -> str:
        return f"#{self.index}: {type(self.error).__name__}: {self.error.explain()}"


Outcome = Result | ItemError | None  # None: not run (interrupted before it started)


class BatchResult(Sequence[Outcome]):
    """The outcomes of a batch, in input order. ``texts`` has None where an item failed."""

    def __init__(self, items: list[Any], run_one: Callable[[Any], Result], concurrency: int,
                 progress: bool = True, label: str = "sagemaker"):
        self.items = items
        self.outcomes: list[Outcome] = [None] * len(items)
        self.run_one = run_one
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.label = label
        self.interrupted = False
        self.elapsed = 0.0
        self._lock = threading.Lock()

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

    # -- running -----------------------------------------------------------------------------
    def _settle(self, index: int, future: Future) -> None:
        error = future.exception() if not future.cancelled() else None
        if future.cancelled():
            return
        if error is None:
            outcome: Outcome = future.result()
        else:
            wrapped = error if isinstance(error, SageMakerError) else translate(error)
            outcome = ItemError(index, self.items[index], wrapped)
        with self._lock:
            self.outcomes[index] = outcome

    def run(self, indices: list[int] | None = None) -> BatchResult:
        """Run the given items (default: all); returns self.

        Every item is queued at once and idle workers take the next one themselves (no hand-off
        through this thread); Ctrl-C cancels what has not started.
        """
        import time

        from tqdm.auto import tqdm

        todo = list(range(len(self.items))) if indices is None else indices
        self.interrupted = False
        start = time.perf_counter()
        bar = tqdm(total=len(todo), desc=self.label, disable=not self.progress or not todo, leave=True)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="sm-magic-batch")
        try:
            futures = [self._submit(pool, index) for index in todo]
            for _ in as_completed(futures):
                bar.update(1)
                if self.failed:
                    bar.set_postfix(failed=len(self.failed), refresh=False)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
            self.elapsed = time.perf_counter() - start
        return self

    def _submit(self, pool: ThreadPoolExecutor, index: int) -> Future:
        future = pool.submit(self.run_one, self.items[index])
        future.add_done_callback(lambda f, i=index: self._settle(i, f))
        return future

    def retry(self, concurrency: int | None = None) -> BatchResult:
        """Re-run the failed and never-run items only; finished results are kept."""
        if concurrency:
            self.concurrency = concurrency
        todo = [i for i, o in enumerate(self.outcomes) if not isinstance(o, Result)]
        return self.run(todo)

    # -- display -------------------------------------------------------------------------------
    def summary(self) -> str:
        parts = [f"{len(self.ok)}/{len(self)} ok"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.pending:
            parts.append(f"{len(self.pending)} not run")
        parts.append(f"{self.elapsed:.2f} s at concurrency {self.concurrency}")
        if self.failed or self.pending:
            parts.append("re-run the rest with `.retry()` or `%sagemaker retry VAR`")
        return " · ".join(parts)

    def rows(self, limit: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
        rows = []
        for i, outcome in enumerate(self.outcomes[:limit]):
            if isinstance(outcome, Result):
                rows.append({"#": i, "status": "ok", "answer": outcome.text[:100],
                             "ms": round(outcome.latency * 1000)})
            elif isinstance(outcome, ItemError):
                rows.append({"#": i, "status": type(outcome.error).__name__,
                             "answer": outcome.error.explain()[:100], "ms": None})
            else:
                rows.append({"#": i, "status": "not run", "answer": "", "ms": None})
        return rows

    def _repr_markdown_(self) -> str:
        from sm_magic.display import Table

        table = Table(self.rows())._repr_markdown_()
        more = f"\n\n… {len(self) - PREVIEW_ROWS} more" if len(self) > PREVIEW_ROWS else ""
        return f"**Batch**: {self.summary()}\n\n{table}{more}"

    def __repr__(self) -> str:
        return f"<BatchResult {self.summary()}>"


def run_batch(run_one: Callable[[Any], Result], items: list[Any], concurrency: int,
              progress: bool = True, label: str = "sagemaker") -> BatchResult:
    """Run ``run_one`` over ``items`` with at most ``concurrency`` calls in flight."""
    return BatchResult(list(items), run_one, concurrency, progress, label).run()
