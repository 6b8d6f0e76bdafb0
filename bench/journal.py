"""What journaling costs: per-call overhead, the writer designs compared, commit delay, a batch on vs off.

Each function returns table rows (:class:`bench.measure.Row`). ``python -m bench.journal`` prints
the ones that need no endpoint; :func:`rows` adds the batch comparison when given a local endpoint.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import Row
from sm_magic.journal import INSERT_CALL, Journal
from sm_magic.records import CallRecord

SECTION = "journal"


def _record(i: int, job: int | None = None) -> CallRecord:
    return CallRecord(endpoint="fast", prompt=f"What is the capital of country number {i}? Answer briefly.",
                      answer=f"The capital is city {i}.", handler="tgi", region="us-east-1",
                      params={"temperature": 0.2, "max_new_tokens": 64}, usage={"completion_tokens": 7},
                      latency=0.001, job_id=job, item=i)


def _us(values: list[float]) -> tuple[str, str]:
    return f"{statistics.median(values) * 1e6:.1f} µs", f"{min(values) * 1e6:.1f}–{max(values) * 1e6:.1f}"


def record_overhead(calls: int = 20000, chunk: int = 500) -> list[Row]:
    """µs per call: record_call in the caller's thread, and recorded + committed (the writer's work too)."""
    records = [_record(i) for i in range(chunk)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, enabled in (("journal off: record_call", False), ("journal on: record_call (caller)", True)):
            journal = Journal(Path(tmp) / f"{enabled}.sqlite3", enabled=enabled)
            journal.record_call(records[0])
            journal.flush()
            per_chunk, committed = [], []
            for _ in range(calls // chunk):
                start = time.perf_counter()
                for record in records:
                    journal.record_call(record)
                middle = time.perf_counter()
                journal.flush()
                end = time.perf_counter()
                per_chunk.append((middle - start) / chunk)
                committed.append((end - start) / chunk)
            journal.close()
            rows.append(Row(SECTION, name, *_us(per_chunk), note=f"median of {calls // chunk} runs of {chunk}"))
            if enabled:
                rows.append(Row(SECTION, "journal on: recorded and committed (caller + writer thread)",
                                *_us(committed), note="goal ≤ +50 µs per call"))
    return rows


def writer_designs(calls: int = 6400, threads: int = 16) -> list[Row]:
    """The chosen design (one writer thread, group commit) against one connection per thread, autocommit."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "queue.sqlite3")
        journal.record_call(_record(0))
        journal.flush()
        took = _threads(threads, calls, lambda i: journal.record_call(_record(i)), journal.flush)
        journal.close()
        rows.append(Row(SECTION, f"one writer thread + queue, {threads} threads recording", f"{took * 1e6:.1f} µs",
                        note="per call, until committed (chosen)"))

        path = Path(tmp) / "direct.sqlite3"
        schema = Journal(path)  # creates the file and its tables
        schema.record_call(_record(0))
        schema.close()
        local = threading.local()

        def direct(i: int) -> None:
            if not hasattr(local, "conn"):
                local.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                local.conn.execute("PRAGMA synchronous=NORMAL")
            r = _record(i)
            local.conn.execute(INSERT_CALL, (r.time, r.session, r.endpoint, r.region, r.handler, r.prompt, None,
                                             '{"temperature": 0.2}', None, r.answer, '{"completion_tokens": 7}',
                                             r.latency, None, r.status, None, None, None, i))

        took = _threads(threads, calls, direct, lambda: None)
        rows.append(Row(SECTION, f"one connection per thread, commit per call, {threads} threads",
                        f"{took * 1e6:.1f} µs", note="per call (rejected: the write lock serialises the threads)"))
    return rows


def _threads(threads: int, calls: int, work: Callable[[int], None], finish: Callable[[], None]) -> float:
    def run() -> None:
        for i in range(calls // threads):
            work(i)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    finish()
    return (time.perf_counter() - start) / calls


def commit_delay(seconds: float = 2.0, threads: int = 16) -> list[Row]:
    """How long after record_call a call is on disk while ``threads`` threads each record a call every ms.

    That load is a batch of 1 ms calls at concurrency 16. Measured as record_call → flush() returning
    in a probe thread: the window a kill -9 can lose.
    """
    delays: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "delay.sqlite3")
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                journal.record_call(_record(i))
                i += 1
                time.sleep(0.001)

        pool = [threading.Thread(target=load) for _ in range(threads - 1)]
        for t in pool:
            t.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.perf_counter()
            journal.record_call(_record(-1))
            journal.flush()
            delays.append(time.perf_counter() - start)
            time.sleep(0.005)
        stop.set()
        for t in pool:
            t.join()
        journal.close()
    delays.sort()
    p99 = delays[int(len(delays) * 0.99) - 1] if len(delays) >= 100 else delays[-1]
    return [Row(SECTION, f"record → committed, {threads} threads each recording every 1 ms",
                f"{statistics.median(delays) * 1000:.2f} ms", f"p99 {p99 * 1000:.2f} ms, max {delays[-1] * 1000:.2f}",
                note="what a kill -9 can lose, in time")]


def batch_on_off(call: Callable[[str], Any], n: int = 10000, concurrency: int = 16,
                 label: str = "", repeat: int = 3) -> list[Row]:
    """The same batch through ``call`` (prompt → Result) with each finished call journaled, and without.

    The journaled run records a job and one CallRecord per item, as the runner will.
    """
    from sm_magic.batch import run_batch

    prompts = [(i, f"item {i}") for i in range(n)]
    run_batch(lambda item: call(item[1]), prompts[:concurrency], concurrency, progress=False)  # warm-up
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}  # CPU time of the whole process (client, endpoint if local, writer)
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "batch.sqlite3")
        job = journal.start_job("batch", label or "bench", None, n)

        def journaled(item: tuple[int, str]) -> Any:
            index, prompt = item
            started = time.time()
            result = call(prompt)
            journal.record_call(CallRecord(endpoint=result.endpoint, prompt=prompt, answer=result.text,
                                           handler=result.handler, params=result.params, usage=result.usage,
                                           latency=result.latency, time=started, job_id=job, item=index))
            return result

        for _ in range(repeat):  # alternate, so a busy moment on the machine hits both
            for name, run_one in (("off", lambda item: call(item[1])), ("on", journaled)):
                start, cpu = time.perf_counter(), time.process_time()
                run_batch(run_one, prompts, concurrency, progress=False)
                if name == "on":
                    journal.flush()
                times.setdefault(name, []).append(time.perf_counter() - start)
                cpus.setdefault(name, []).append(time.process_time() - cpu)
        stored = len(journal.finished_items(job))
        journal.close()
    what = f"batch {n} × {label or 'call'} at concurrency {concurrency}"
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    cpu_per_call = (statistics.median(cpus["on"]) - statistics.median(cpus["off"])) / n
    spread = {name: f"{min(v) * 1000:.0f}–{max(v) * 1000:.0f} ms" for name, v in times.items()}
    return [Row(SECTION, f"{what}, journal off", f"{off * 1000:.0f} ms", spread["off"], "1.00×",
                note=f"median of {repeat}, runs alternated"),
            Row(SECTION, f"{what}, journal on", f"{on * 1000:.0f} ms", spread["on"], f"{on / off:.2f}×",
                note=f"goal ≤ 1.05×; {stored} of {n} items journaled"),
            Row(SECTION, f"{what}: CPU added per call by the journal", f"{cpu_per_call * 1e6:.0f} µs",
                note="process CPU time, on minus off (steadier than wall time on a busy machine)")]


def local_batch_on_off(server: Any, n: int = 10000, concurrency: int = 16) -> list[Row]:
    """:func:`batch_on_off` against the bench's local endpoint ``fast`` (0 ms latency) through boto3."""
    from bench.measure import TGI, client
    from sm_magic.calls import invoke
    from sm_magic.session import Session

    session = Session(client=client(server, pool=max(32, concurrency)))
    return batch_on_off(lambda prompt: invoke(session, "fast", prompt, TGI), n, concurrency, label="fast (0 ms)")


def rows(server: Any = None, quick: bool = False) -> list[Row]:
    """Every journal row; the batch comparison only with a local endpoint."""
    out = record_overhead(2000 if quick else 20000)
    out += writer_designs(640 if quick else 6400)
    out += commit_delay(0.3 if quick else 2.0)
    if server is not None:
        out += local_batch_on_off(server, 200 if quick else 10000, 4 if quick else 16)
    return out


if __name__ == "__main__":
    import sys

    from bench.measure import servers

    quick = "--quick" in sys.argv
    server = servers(quick) if "--endpoint" in sys.argv else None
    try:
        for row in rows(server, quick):
            print(f"| {row.section} | {row.what} | {row.median} | {row.spread} | {row.ratio} | {row.note} |")
    finally:
        if server is not None:
            server.stop()
