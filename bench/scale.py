"""Scale and speed rows: unpaced streaming, big batches, concurrency 64, throttling recovery, a
capacity-limited endpoint, the panel open during a batch, journaling on vs off and memory after a
batch of big prompts.

Every batch contender runs in a fresh worker process (``python -m bench.scale WORKER_JSON``) against
the endpoint process, so each one's peak RSS is its own and no run inherits another's heap. The
streaming rows run in the bench process, through an IPython shell with every display format active
(what a notebook's display path does).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.measure import LMI, Row, client, in_blocks

STREAM = "streaming, unpaced"
BATCH = "batch at 0 ms"
C64 = "concurrency 64"
THROTTLE = "throttling"
CAPACITY = "capacity"
PANEL = "panel"
DURABLE = "journal on/off"


# -- the worker: one batch contender in its own process ----------------------------------------------
class PeakRSS:
    """The process's peak resident memory while the block runs, sampled every 10 ms (psutil)."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        return self.process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def raw_threads(raw: Any, endpoint: str, items: list[str], threads: int, max_new_tokens: int = 0) -> list[str]:
    """The baseline: ``threads`` threads taking the next item and calling boto3 (JSON in, JSON out), with
    the headers the seed's LangChain recipe sends (Content-Type and Accept)."""
    answers: list[str] = [""] * len(items)
    counter = itertools.count()
    parameters = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}

    def work() -> None:
        while (i := next(counter)) < len(items):
            body = json.dumps({"inputs": items[i], "parameters": parameters}).encode()
            response = raw.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json",
                                           Accept="application/json")
            answers[i] = json.loads(response["Body"].read())[0]["generated_text"]

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return answers


def notebook_shell(url: str) -> Any:
    """The IPython shell with sm_magic on ``url``, displaying every format as a notebook frontend does."""
    import os

    from IPython.core.interactiveshell import InteractiveShell

    os.environ.setdefault("SM_MAGIC_ENDPOINTS", os.devnull)
    shell = InteractiveShell.instance()
    shell.display_formatter.active_types = list(shell.display_formatter.format_types)
    if "sm_magic" not in shell.extension_manager.loaded:
        shell.run_line_magic("load_ext", "sm_magic")
    shell.run_line_magic("sagemaker", f"session --local {url}")
    return shell


def runner_of(shell: Any) -> Any:
    """The shell's :class:`sm_magic.runner.Runner` (the one the magic and the panel use)."""
    return shell.magics_manager.registry["SageMakerMagics"].runner


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One batch: ``kind`` raw | magic (``%%sagemaker --batch``) | runner (``Runner.batch``)."""
    from IPython.utils.capture import capture_output

    from sm_magic.local.faults import Fault, inject_remote

    url, endpoint, n, conc = job["url"], job["endpoint"], job["n"], job["concurrency"]
    tokens, size = job.get("max_new_tokens", 0), job.get("prompt_bytes", 0)
    warm = [f"warm {i}" for i in range(conc)]
    out: dict[str, Any] = {}
    if job["kind"] == "raw":  # in an IPython shell too: a notebook kernel runs the user's own code in one
        from IPython.core.interactiveshell import InteractiveShell

        InteractiveShell.instance()
        raw = client(url, pool=max(conc, 10))
        raw_threads(raw, endpoint, warm, conc)

        def go(items: list[str]) -> Any:
            return raw_threads(raw, endpoint, items, conc, tokens)
    else:
        shell = notebook_shell(url)
        runner = runner_of(shell)
        for setting in job.get("config", []):
            shell.run_line_magic("sagemaker", f"config {setting}")
        if job.get("panel"):
            from sm_magic.widgets.panel import Panel

            shell.user_ns["bench_panel"] = Panel(runner, shell)
        line = f"{endpoint} --handler tgi --batch items --concurrency {conc} --yes -o out" + \
            (f" --max-new-tokens {tokens}" if tokens else "")

        def go(items: list[str]) -> Any:
            if job["kind"] == "runner":
                from sm_magic.resolve import CallSpec

                values = {"endpoint": endpoint, "handler": "tgi", "yes": True,
                          **({"max_new_tokens": tokens} if tokens else {})}
                shell.user_ns["out"] = runner.batch(CallSpec("{text}", values, "{text}"), items, {},
                                                    concurrency=conc, progress=False)
            else:
                shell.user_ns["items"] = items
                with capture_output():
                    shell.run_cell_magic("sagemaker", line, "{text}")
            return shell.user_ns["out"]

        go(warm)
    for fault in job.get("faults", []):
        inject_remote(url, endpoint, Fault(**fault))
    gc.collect()
    memory = PeakRSS()
    start_rss = memory.now()
    items = [f"item {i} " + "x" * size for i in range(n)]
    with memory:
        start, cpu = time.perf_counter(), time.process_time()
        result = go(items)
        out["seconds"], out["cpu"] = time.perf_counter() - start, time.process_time() - cpu
    out.update(rss_start=start_rss, rss_peak=memory.peak, n=n)
    if job["kind"] != "raw":
        out.update(ok=len(result.ok), failed=len(result.failed), throttles=result.limiter.throttles,
                   lowest=result.limiter.lowest, summary=result.summary())
    if job.get("release"):
        del result, items
        if job["kind"] != "raw":
            shell.user_ns.pop("out", None)
            shell.user_ns.pop("items", None)
        gc.collect()
        out["rss_after_del"] = memory.now()
        if job["kind"] != "raw":  # what still holds memory: the runner's last result, then the C heap
            runner.last = None
            gc.collect()
            out["rss_after_last"] = memory.now()
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            out["rss_after_trim"] = memory.now()
    return out


def run_worker(**job: Any) -> dict[str, Any]:
    """:func:`worker` in a fresh process; its JSON answer."""
    done = subprocess.run([sys.executable, "-m", "bench.scale", json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {job['kind']} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mb(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


# -- batches at 0 ms -----------------------------------------------------------------------------------
def batches(server: Any, sizes: list[int], concurrency: int = 16, repeat: int = 1) -> list[Row]:
    """Raw boto3 in ``concurrency`` threads vs ``%%sagemaker --batch`` (journal on and off) vs Runner.batch."""
    kinds = {"raw boto3, threads": {"kind": "raw"},
             "%%sagemaker --batch (journal on)": {"kind": "magic"},
             "%%sagemaker --batch, log=off": {"kind": "magic", "config": ["log=off"]},
             "Runner.batch (journal on)": {"kind": "runner"}}
    rows = []
    for n in sizes:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in kinds}
        for _ in range(repeat if n < 50_000 else 2):  # alternate: a busy moment hits every contender
            for name, job in kinds.items():
                if n >= 50_000 and name.startswith("Runner"):
                    continue
                runs[name].append(run_worker(url=server.url, endpoint="fast", n=n, concurrency=concurrency, **job))
        base = runs["raw boto3, threads"]
        for name, results in runs.items():
            if not results:
                continue
            took = statistics.median(r["seconds"] for r in results)
            growth = max(r["rss_peak"] - r["rss_start"] for r in results)
            goal = "baseline" if name.startswith("raw") else "goal ≤ 1.10×"
            if n >= 50_000 and not name.startswith("raw"):
                goal += ", RSS growth ≤ 100 MB"
            failed = sum(r.get("failed", 0) for r in results)
            ratio, ratios = paired(results, base)
            rows.append(Row(BATCH, f"{n:,} × 0 ms, concurrency {concurrency}: {name}", f"{took:.2f} s",
                            _spread(results), f"{ratio:.2f}×",
                            f"{goal}{_ratio_range(ratios)}; peak RSS +{_mb(growth)}"
                            + (f"; {failed} failed" if failed else "")))
    return rows


def paired(results: list[dict[str, Any]], base: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """The median of each round's own ratio (a contender over the baseline run just before it) and those
    ratios: a slow spell of the machine, which lasts longer than a round, cancels out of its round."""
    ratios = [r["seconds"] / b["seconds"] for r, b in zip(results, base, strict=True)]
    return statistics.median(ratios), ratios


def _ratio_range(ratios: list[float]) -> str:
    return f" (rounds {min(ratios):.2f}–{max(ratios):.2f}×)" if min(ratios) != max(ratios) else ""


def _spread(results: list[dict[str, Any]]) -> str:
    values = [r["seconds"] for r in results]
    return f"{min(values):.2f}–{max(values):.2f} s (n={len(values)})"


def concurrency_64(server: Any, n: int = 2000, repeat: int = 1) -> list[Row]:
    """2,000 × 20 ms at concurrency 64: ``%%sagemaker --batch`` vs raw boto3 in 64 threads (ideal n/64 × 20 ms);
    the two alternate ``repeat`` times, medians."""
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "magic": []}
    for _ in range(repeat):
        for kind, results in runs.items():
            results.append(run_worker(url=server.url, endpoint="latency-20ms", n=n, concurrency=64, kind=kind))
    raw, ours = (statistics.median(r["seconds"] for r in runs[kind]) for kind in ("raw", "magic"))
    ratio, ratios = paired(runs["magic"], runs["raw"])
    ideal = n / 64 * 0.02
    return [Row(C64, f"{n:,} × 20 ms: ideal (n / 64 × 20 ms)", f"{ideal:.2f} s"),
            Row(C64, f"{n:,} × 20 ms: raw boto3, 64 threads", f"{raw:.2f} s", _spread(runs["raw"]), "1.00×",
                note=f"{raw / ideal:.2f}× ideal (the client's CPU is the limit)"),
            Row(C64, f"{n:,} × 20 ms: %%sagemaker --batch --concurrency 64", f"{ours:.2f} s", _spread(runs["magic"]),
                f"{ratio:.2f}×", note=f"goal ≤ 1.10×{_ratio_range(ratios)}; {runs['magic'][-1]['summary']}")]


def throttling(server: Any, n: int = 200, burst: int = 30) -> list[Row]:
    """200 prompts at concurrency 8 on a 20 ms endpoint: healthy; after 30 throttles (standard, adaptive)."""
    fault = [{"kind": "throttle", "times": burst}]
    cases = {"no faults": {}, f"{burst} throttles first, retry_mode=standard": {"faults": fault},
             f"{burst} throttles first, retry_mode=adaptive": {"faults": fault, "config": ["retry_mode=adaptive"]}}
    rows = []
    for name, extra in cases.items():
        r = run_worker(url=server.url, endpoint="burst", n=n, concurrency=8, kind="magic", **extra)
        goal = "goal ≤ 2 s (was 61.9 s with adaptive)" if "throttles" in name else "reference"
        rows.append(Row(THROTTLE, f"{n} × 20 ms at concurrency 8, {name}", f"{r['seconds']:.2f} s",
                        note=f"{goal}; {r['summary']}"))
    return rows


def capacity(server: Any, n: int = 1000, limit: int = 8, latency: float = 0.02) -> list[Row]:
    """An endpoint taking ``limit`` calls in flight (ThrottlingException beyond), asked for 32."""
    before = server.stats()["endpoints"]["capped"]["errors"].get("ThrottlingException", 0)
    r = run_worker(url=server.url, endpoint="capped", n=n, concurrency=32, kind="magic")
    throttled = server.stats()["endpoints"]["capped"]["errors"].get("ThrottlingException", 0) - before
    ideal = limit / latency
    achieved = n / r["seconds"]
    return [Row(CAPACITY, f"capacity {limit} in flight × {latency * 1000:.0f} ms, {n:,} items at concurrency 32",
                f"{achieved:.0f} calls/s", ratio=f"{achieved / ideal:.2f}×",
                note=f"of {ideal:.0f} calls/s capacity (goal ≥ 0.85×); failed items {r['failed']} (goal 0); "
                     f"{throttled} ThrottlingException answers; {r['summary']}")]


def panel(server: Any, n: int = 2000, repeat: int = 2) -> list[Row]:
    """The same batch with ``Panel(runner, shell)`` constructed (its history view listening) and without."""
    runs: dict[str, list[dict[str, Any]]] = {"closed": [], "open": []}
    for _ in range(repeat):
        for name, results in runs.items():
            results.append(run_worker(url=server.url, endpoint="fast", n=n, concurrency=16, kind="magic",
                                      panel=name == "open"))
    rows = []
    for name, results in runs.items():
        ratio, ratios = paired(results, runs["closed"])
        took = statistics.median(r["seconds"] for r in results)
        rows.append(Row(PANEL, f"{n:,} × 0 ms batch, panel {name}", f"{took:.2f} s", _spread(results),
                        f"{ratio:.2f}×", "baseline" if name == "closed" else
                        f"goal ≤ 1.10× (was 3.9×){_ratio_range(ratios)}"))
    return rows


def big_prompts(server: Any, n: int = 300, size: int = 1_000_000) -> list[Row]:
    """RSS after a batch of ``n`` prompts of ``size`` bytes, then ``del`` of the items and the result + gc."""
    r = run_worker(url=server.url, endpoint="fast-short", n=n, concurrency=8, kind="magic", prompt_bytes=size,
                   max_new_tokens=16, release=True)
    start = r["rss_start"]
    return [Row(DURABLE, f"RSS after {n} × {size / 1e6:.0f} MB prompts (%%sagemaker --batch), del + gc",
                f"+{_mb(r['rss_after_del'] - start)}",
                note=f"goal ≤ +50 MB over the start; peak +{_mb(r['rss_peak'] - start)}; then with the runner's "
                     f"last result dropped +{_mb(r['rss_after_last'] - start)}; then malloc_trim "
                     f"+{_mb(r['rss_after_trim'] - start)} (diagnosis, not something a user does)")]


def journal_per_call(server: Any, repeat: int) -> list[Row]:
    """``%%sagemaker`` per call at 0 ms with the journal on and off (blocks in turn, medians)."""
    from IPython.utils.capture import capture_output

    shell = notebook_shell(server.url)
    state = runner_of(shell).state

    def call(log: bool) -> None:
        state.log = log
        shell.run_cell_magic("sagemaker", "fast --handler tgi", "hi")

    with capture_output():
        times = in_blocks({"on": lambda: call(True), "off": lambda: call(False)}, repeat)
    state.log = True
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return [Row(DURABLE, "%%sagemaker per call, log=off", f"{off * 1000:.3f} ms", ratio="1.00×"),
            Row(DURABLE, "%%sagemaker per call, journal on", f"{on * 1000:.3f} ms", ratio=f"{on / off:.3f}×",
                note=f"{(on - off) * 1e6:+.0f} µs (goal ≤ +50 µs)")]


# -- streaming with no pacing -----------------------------------------------------------------------------
def raw_stream(raw: Any, endpoint: str, body: bytes) -> str:
    """The baseline: boto3's event stream, split into lines, each line JSON-decoded for its token."""
    texts = []
    pending = b""
    response = raw.invoke_endpoint_with_response_stream(EndpointName=endpoint, Body=body,
                                                         ContentType="application/json")
    for event in response["Body"]:
        part = event.get("PayloadPart")
        if part:
            pending += part["Bytes"]
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    texts.append(json.loads(line)["token"]["text"])
    if pending.strip():
        texts.append(json.loads(pending)["token"]["text"])
    return "".join(texts)


def streaming(server: Any, sizes: list[int], repeat: int) -> list[Row]:
    """Raw loop vs ``stream()`` vs ``%%sagemaker --stream`` (notebook display path), no pacing on the server."""
    from IPython.utils.capture import capture_output

    from sm_magic.calls import stream
    from sm_magic.session import Session

    raw = client(server)
    session = Session(client=raw)
    shell = notebook_shell(server.url)
    rows = []
    for size in sizes:
        body = json.dumps({"inputs": "go", "parameters": {"max_new_tokens": size}, "stream": True}).encode()

        def ours(size: int = size) -> None:
            for _ in stream(session, "fast-lmi", "go", LMI, {"max_new_tokens": size}):
                pass

        def magic(size: int = size) -> None:
            with capture_output():
                shell.run_cell_magic("sagemaker", f"fast-lmi --stream --handler lmi --max-new-tokens {size}", "go")

        contenders: dict[str, Callable[[], object]] = {
            "raw boto3 loop, JSON-decoding each event": lambda body=body: raw_stream(raw, "fast-lmi", body),
            "sm_magic stream()": ours, "%%sagemaker --stream (notebook display)": magic}
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():
            fn()
        for _ in range(repeat):
            for name, fn in contenders.items():
                start, used = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - used)
        base = statistics.median(wall["raw boto3 loop, JSON-decoding each event"])
        for name in contenders:
            took = statistics.median(wall[name])
            goal = "baseline" if name.startswith("raw") else ("goal ≤ 1.15×" if "stream()" in name else "")
            rows.append(Row(STREAM, f"{size:,} parts: {name}", f"{took * 1000:.0f} ms",
                            f"{min(wall[name]) * 1000:.0f}–{max(wall[name]) * 1000:.0f}", f"{took / base:.2f}×",
                            f"{goal}{'; ' if goal else ''}client CPU "
                            f"{statistics.median(cpu[name]) / size * 1e6:.1f} µs/part"))
    return rows


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with open("/dev/null", "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


if __name__ == "__main__":
    with _quiet():
        answer = worker(json.loads(sys.argv[1]))
    print(json.dumps(answer))
