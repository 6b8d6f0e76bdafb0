"""Asynchronous inference: 1,000 submissions through S3 (moto's server) and the local endpoint's async route.

Rows: submit throughput (upload + InvokeEndpointAsync), S3 requests made while waiting per collected
result (listings and reads; the upload is one more per item), and the time from the output object
being written (the local endpoint's write returning) to the result being collected — for the batch, and
for lone calls each waiting with the default backoff (goal: median ≤ 1.5 s). Standalone:
``python -m bench.async_``.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.measure import Row
from sm_magic.async_ import AsyncSettings
from sm_magic.async_run import AsyncRun
from sm_magic.handlers.presets import PRESETS
from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.session import Session

SECTION = "async"


@contextmanager
def async_server(latency: float = 0.0, workers: int = 8) -> Iterator[tuple[LocalEndpoint, dict[str, float]]]:
    """moto's S3 on loopback and a local async endpoint ``later`` on it; yields the server and a dict
    output location → when its write returned (time.time())."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    url = f"http://{host}:{port}"
    previous = os.environ.get("AWS_ENDPOINT_URL_S3")
    os.environ["AWS_ENDPOINT_URL_S3"] = url
    spec = EndpointSpec("later", "tgi", "deterministic", async_=True, latency=latency)
    server = LocalEndpoint(ServerConfig(endpoints=[spec], s3_endpoint_url=url, async_workers=workers)).start()
    written: dict[str, float] = {}
    store = server.runtime.store
    assert store is not None
    write = store.write

    def timed_write(uri: str, body: bytes, content_type: str) -> None:
        write(uri, body, content_type)
        written[uri] = time.time()

    store.write = timed_write  # type: ignore[method-assign]
    try:
        yield server, written
    finally:
        server.stop()
        moto.stop()
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        else:
            os.environ["AWS_ENDPOINT_URL_S3"] = previous


def _delays(shown: dict[str, float], written: dict[str, float]) -> list[float]:
    return [shown[uri] - written[uri] for uri in shown if uri in written]


def batch_rows(n: int = 1000, workers: int = 16) -> list[Row]:
    """``n`` submissions on one run: throughput, S3 requests per result, written → collected."""
    with async_server(workers=8) as (server, written):
        session = Session.local(server.url, max_pool_connections=64)
        sent: list[float] = []
        shown: dict[str, float] = {}
        lock = threading.Lock()

        def on_submitted(key: object, submission: object) -> None:
            with lock:
                sent.append(time.perf_counter())

        def on_done(key: object, outcome: object, waiting: object) -> None:
            shown[waiting.submission.output_location] = time.time()  # type: ignore[attr-defined]

        run = AsyncRun(session, AsyncSettings(), workers, on_submitted, on_done)
        handler = PRESETS["tgi"]()
        start = time.perf_counter()
        futures = [run.submit(i, "later", f"question {i}", handler, {}, inference=f"sm-magic-bench-{i:06d}")
                   for i in range(n)]
        answers = [f.result(timeout=600) for f in futures]
        total = time.perf_counter() - start
        run.close()
    assert all(a.text == f"You said: question {i}" for i, a in enumerate(answers))
    delays = _delays(shown, written)
    rate = n / (max(sent) - start)
    per_result = run.requests / max(1, run.collected)
    return [
        Row(SECTION, f"{n} async submissions: submit throughput", f"{rate:.0f} /s",
            note=f"upload + InvokeEndpointAsync, {workers} in flight; all {n} answered in {total:.1f} s"),
        Row(SECTION, "S3 requests per collected result", f"{per_result:.2f}",
            note="listings + reads while waiting (the upload is one more per item)"),
        Row(SECTION, f"{n} async: output written → result collected", f"{statistics.median(delays) * 1000:.0f} ms",
            f"p90 {statistics.quantiles(delays, n=10)[-1] * 1000:.0f} ms", note="goal: median ≤ 1.5 s"),
    ]


def single_rows(calls: int = 20, latency: float = 2.0) -> list[Row]:
    """Lone calls (each its own run, as separate cells would be) on a ``latency``-second model."""
    with async_server(latency=latency, workers=calls) as (server, written):
        session = Session.local(server.url)
        shown: dict[str, float] = {}

        def on_done(key: object, outcome: object, waiting: object) -> None:
            shown[waiting.submission.output_location] = time.time()  # type: ignore[attr-defined]

        runs = [AsyncRun(session, AsyncSettings(), 1, on_done=on_done) for _ in range(calls)]
        futures = [r.submit(i, "later", f"lone {i}", PRESETS["tgi"](), {}) for i, r in enumerate(runs)]
        for f in futures:
            f.result(timeout=120)
        requests = sum(r.requests for r in runs) / calls
        for r in runs:
            r.close()
    delays = _delays(shown, written)
    return [Row(SECTION, f"lone call ({latency:g} s model): output written → result collected",
                f"{statistics.median(delays) * 1000:.0f} ms", f"max {max(delays) * 1000:.0f} ms",
                note=f"default backoff; {requests:.1f} S3 requests per call while waiting; goal: median ≤ 1.5 s")]


def rows(n: int = 1000) -> list[Row]:
    """Every async row."""
    return batch_rows(n) + single_rows()


if __name__ == "__main__":
    for row in rows():
        print(f"{row.what:<62} {row.median:>10} {row.spread:>16}  {row.note}")
