"""Batches: bounded concurrency, order kept, failures recorded and retried, throttling absorbed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request

import pytest
from IPython.core.error import UsageError

from sm_magic import batch as batch_module
from sm_magic.batch import BatchResult, ItemError, run_batch
from sm_magic.calls import invoke
from sm_magic.errors import ModelError
from sm_magic.handlers.registry import Registry
from sm_magic.local import Fault
from sm_magic.session import Session

TGI = Registry().get("tgi")


def test_results_in_input_order_with_bounded_concurrency(session, in_flight):
    with in_flight("slow") as peak:
        batch = run_batch(lambda p: invoke(session, "slow", p, TGI), [f"item {i}" for i in range(40)],
                          concurrency=6, progress=False)
    assert batch.texts == [f"You said: item {i}" for i in range(40)]
    assert 1 < peak[0] <= 6


def test_failures_are_kept_per_item_and_retried(session, local):
    local.inject("faulty", Fault("model-error", times=3, message="bad item"))
    batch = run_batch(lambda p: invoke(session, "faulty", p, TGI), [str(i) for i in range(10)], 1, progress=False)
    assert len(batch.ok) == 7 and len(batch.failed) == 3
    assert all(isinstance(f.error, ModelError) for f in batch.failed)
    assert [f.index for f in batch.failed] == [0, 1, 2]
    assert "7/10 ok · 3 failed" in batch.summary()
    kept = batch[5]
    batch.retry()
    assert batch.texts == [f"You said: {i}" for i in range(10)]
    assert batch[5] is kept  # finished results were not re-run


def test_a_jobs_status_follows_its_retry(ip, local):
    """A journaled batch that ended partial, then completed by `.retry()`, is `ok` in `%sagemaker jobs`."""
    local.inject("faulty", Fault("model-error", times=2, message="bad item"))
    ip.user_ns["items"] = [str(i) for i in range(5)]
    batch = ip.run_cell_magic("sagemaker", "faulty --handler tgi --batch items --concurrency 1 --yes", "{text}")
    assert ip.run_line_magic("sagemaker", "jobs").rows[0]["status"] == "partial"
    batch.retry()
    assert batch.summary().startswith("5/5 ok")
    assert ip.run_line_magic("sagemaker", "jobs").rows[0]["status"] == "ok"


def test_throttling_slows_the_batch_instead_of_failing_it(local):
    session = Session.local(local.url, max_attempts=5)
    local.inject("faulty", Fault("throttle", times=6))
    batch = run_batch(lambda p: invoke(session, "faulty", p, TGI), [str(i) for i in range(12)], 4, progress=False)
    assert batch.failed == [] and len(batch.ok) == 12


def test_a_batch_finds_an_endpoints_capacity_and_stays_under_it():
    """Asked for 16 at once, an endpoint that takes 4 answers ThrottlingException beyond: the batch backs
    off to 4 and probes the refused level rarely, so nothing fails and few calls are refused."""
    from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig

    spec = EndpointSpec("four", "tgi", "deterministic", latency=0.01, max_concurrency=4)
    with LocalEndpoint(ServerConfig(endpoints=[spec])) as server:
        session = Session.local(server.url)
        items = [str(i) for i in range(300)]
        batch = run_batch(lambda p: invoke(session, "four", p, TGI), items, 16, progress=False)
        with urllib.request.urlopen(f"{server.url}/_local/stats", timeout=10) as answer:
            refused = json.loads(answer.read())["endpoints"]["four"]["errors"].get("ThrottlingException", 0)
    assert batch.failed == [] and batch.texts == [f"You said: {i}" for i in items]
    assert batch.limiter.lowest <= 4 and batch.limiter.throttles == refused
    assert refused < 30  # climbing straight back to 5 would be refused every ~5 answers: 60 or more


def ctrl_c_after(local, endpoint: str, calls: int) -> None:
    """Ctrl-C (SIGINT to this process) once the endpoint has counted ``calls`` calls."""
    def trigger():
        while local.calls[endpoint] < calls:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=trigger, daemon=True).start()


def test_ctrl_c_stops_issuing_calls_and_keeps_finished_ones(session, local):
    before = local.calls["slow"]
    ctrl_c_after(local, "slow", before + 6)
    batch = run_batch(lambda p: invoke(session, "slow", p, TGI), [str(i) for i in range(200)], 2, progress=False)
    assert batch.interrupted
    assert 0 < len(batch.ok) < 200
    assert len(batch.ok) == local.calls["slow"] - before  # the calls in flight at Ctrl-C were waited for
    assert batch.pending  # not issued
    done = len(batch.ok)
    batch.retry(concurrency=8)
    assert len(batch.ok) == 200 and done < 200


def test_a_retry_right_after_ctrl_c_leaves_the_calls_still_in_flight_be(session, local, monkeypatch):
    """Ctrl-C shows the batch while calls are still in flight; retrying at once must not call those items
    again (they land in their slots), and the counts must add up (hostile pass: 16 calls, "16/12 ok")."""
    monkeypatch.setattr(batch_module, "SETTLE", 0.0)  # the table at once, the calls still out
    before = local.calls["slow"]
    ctrl_c_after(local, "slow", before + 4)
    batch = run_batch(lambda p: invoke(session, "slow", p, TGI), [str(i) for i in range(40)], 4, progress=False)
    assert batch.interrupted
    batch.retry()
    deadline = time.monotonic() + 10
    while len(batch.ok) < 40 and time.monotonic() < deadline:  # the first run's last calls, still landing
        time.sleep(0.01)
    assert batch.texts == [f"You said: {i}" for i in range(40)]
    assert local.calls["slow"] - before == 40  # not one item twice
    assert batch.summary().startswith("40/40 ok") and "in flight" not in batch.summary()


def test_batch_magic_with_records_and_column(ip, local):
    ip.user_ns["rows"] = [{"title": "A", "body": "alpha"}, {"title": "B", "body": "beta"}]
    result = ip.run_cell_magic("sagemaker", "tgi --batch rows --column body", "{title}: {text}")
    assert isinstance(result, BatchResult)
    assert result.texts == ["You said: A: alpha", "You said: B: beta"]
    assert "2/2 ok" in result._repr_markdown_()
    with pytest.raises(Exception, match="no field 'missing'"):
        ip.run_cell_magic("sagemaker", "tgi --batch rows --column missing", "{text}")


def test_batch_dry_run_sizes_the_pool_to_the_concurrency(ip, local):
    ip.user_ns["items"] = ["x", "y", "z"]
    before = sum(local.calls.values())
    shown = ip.run_cell_magic("sagemaker", "tgi --batch items --dry-run --concurrency 64", "Q {text}")
    assert sum(local.calls.values()) - before == 0
    assert "3 calls at concurrency 64" in repr(shown)  # not capped at the default pool of 32
    assert '"inputs": "Q x"' in repr(shown)
    with pytest.raises(UsageError, match="concurrency must be between 1 and 256, not 500"):
        ip.run_cell_magic("sagemaker", "tgi --batch items --concurrency 500", "Q {text}")


def test_item_error_text():
    from sm_magic.errors import Throttled

    error = ItemError(3, "x", Throttled("slow down"))
    assert str(error).startswith("#3: Throttled: slow down")


@pytest.mark.parametrize(("endpoint", "delays", "waits"), [
    ("tgi", [0.001, 0.001, 0.3], 1),  # a fast endpoint: its long outlier waits for its commit
    ("tgi", [0.015, 0.015, 0.015, 0.028, 0.015], 0),  # over 20 ms, not far over the usual: no wait
    ("tgi", [0.01, 0.01, 0.01, 0.045, 0.01], 1),  # over 3× the usual before it: a wait
    ("slow", [], 6),  # a 50 ms endpoint: every item does (a kill -9 repeats only the calls in flight)
])
def test_a_batch_waits_for_the_commit_of_costly_items_only(ip, local, monkeypatch, endpoint, delays, waits):
    from sm_magic.journal import Journal

    flushes = []
    flush = Journal.flush
    monkeypatch.setattr(Journal, "flush", lambda self: (flushes.append(1), flush(self))[1])
    ip.user_ns["items"] = [f"item {i}" for i in range(6)]
    ip.run_cell_magic("sagemaker", "tgi --batch items --concurrency 1 --yes", "{text}")  # the journal: open
    flushes.clear()
    local.inject(endpoint, *(Fault("latency", seconds=s) for s in delays))
    batch = ip.run_cell_magic("sagemaker", f"{endpoint} --handler tgi --batch items --concurrency 1 --yes", "Q {text}")
    assert len(batch.ok) == 6
    assert len(flushes) == waits


def test_costly_means_a_slow_endpoint_or_an_outlier_not_a_busy_client():
    from sm_magic.jobs import worth_a_wait

    assert not worth_a_wait(0.019, 1.0)  # under the group commit's wait: never
    assert worth_a_wait(0.021, 0.05)  # a slow endpoint's item
    assert worth_a_wait(0.3, 0.002)  # a long answer on a fast endpoint
    assert not worth_a_wait(0.025, 0.011)  # 16 busy threads on a 0 ms endpoint: the client's own queueing


def test_after_a_throttling_burst_the_spacing_between_starts_is_gone_within_a_second_of_answers():
    """Hostile pass: the spacing grew to 0.5 s and shrank by a tenth per answer, so a burst of throttles kept a
    batch on a fast or a slow endpoint about 5 s slower than needed (the 20 ms bench case hid it)."""
    limiter = batch_module.Limiter(8)
    for _ in range(30):
        limiter.throttled(0.0, 8)  # each one a new round trip: the largest cut every time
    assert limiter.gap == batch_module.GAP_MAX
    spent = 0.0
    while limiter.gap:
        spent += limiter.gap
        limiter.success()
    assert spent < 1.0
