"""The fault matrix: each fault × each path (single call, stream, batch, QA map step), for real.

For every cell: the error the user sees names the cause and the fix; retries happen only where safe;
batches and map steps keep finished results; streams keep the text that arrived; the next call works.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sm_magic.batch import run_batch
from sm_magic.calls import invoke, stream
from sm_magic.errors import (
    ConnectionFailed,
    CredentialsError,
    EndpointNotFound,
    HandlerError,
    ModelError,
    PartialAnswer,
    ReadTimeout,
    SageMakerError,
    ServiceError,
    StreamError,
    Throttled,
)
from sm_magic.handlers.registry import Registry
from sm_magic.local import EndpointSpec, Fault, LocalEndpoint, ServerConfig
from sm_magic.qa import answer
from sm_magic.session import Session

REGISTRY = Registry()
PROMPT = "Peter stayed with her at the hospital for 3 days.\nQuestion: How long?\nAnswer:"
DOCS = [f"Memo {i}. The committee met about the budget. " * 6 for i in range(4)]


@dataclass
class Case:
    id: str
    error: type[SageMakerError]
    words: str  # in the explanation
    fault: Fault | None = None
    attempts: int = 1  # calls the endpoint sees for one user call (2 = retried once)
    stream_only: bool = False
    endpoint: str = "m-tgi"
    region: str = "us-east-1"
    read_timeout: float = 5.0


CASES = [
    Case("throttling", Throttled, "throttling requests", Fault("throttle", times=-1), attempts=2),
    Case("model-not-ready", Throttled, "still loading the model", Fault("not-ready", times=-1), attempts=2),
    Case("500-internal-failure", ServiceError, "500 InternalFailure", Fault("internal", times=-1), attempts=2),
    Case("503-service-unavailable", ServiceError, "503 ServiceUnavailable", Fault("unavailable", times=-1),
         attempts=2),
    Case("424-model-error", ModelError, "CUDA out of memory",
         Fault("model-error", times=-1, status=500, message="CUDA out of memory")),
    Case("read-timeout", ReadTimeout, "read timeout", Fault("latency", times=-1, seconds=2.0), read_timeout=0.8),
    Case("connection-reset", ConnectionFailed, "closed the connection", Fault("reset", times=-1), attempts=2),
    Case("mid-stream-model-stream-error", StreamError, "ModelStreamError",
         Fault("stream-error", times=-1, after_parts=3), stream_only=True, endpoint="m-lmi"),
    Case("mid-stream-dropped-connection", StreamError, "broke while the answer was arriving",
         Fault("drop", times=-1, after_parts=3), stream_only=True, endpoint="m-lmi"),
    Case("corrupt-event-stream-frame", StreamError, "ChecksumMismatch",
         Fault("corrupt", times=-1, after_parts=3), stream_only=True, endpoint="m-lmi"),
    Case("lmi-in-band-error", StreamError, "reported an error in the stream",
         Fault("lmi-error", times=-1, after_parts=3), stream_only=True, endpoint="m-lmi"),
    Case("malformed-body", HandlerError, "Content handler 'tgi' failed", Fault("malformed", times=-1)),
    Case("expired-credentials", CredentialsError, "ExpiredTokenException", Fault("expired-token", times=-1)),
    Case("endpoint-not-found", EndpointNotFound, "%sagemaker endpoints", endpoint="no-such-endpoint"),
    Case("wrong-region", EndpointNotFound, "region eu-west-1", region="eu-west-1"),
]
PATHS = ["single", "stream", "batch", "qa-map"]
MATRIX = [pytest.param(case, path, id=f"{case.id}-{path}") for case in CASES for path in PATHS
          if not (case.stream_only and path != "stream")]


@pytest.fixture(scope="module")
def matrix_endpoint() -> Iterator[LocalEndpoint]:
    specs = [EndpointSpec("m-tgi", "tgi", "deterministic"), EndpointSpec("m-lmi", "lmi", "deterministic")]
    with LocalEndpoint(ServerConfig(endpoints=specs, strict_region=True)) as server:
        yield server


def make_session(server: LocalEndpoint, case: Case) -> Session:
    return Session.local(server.url, region=case.region, retry_mode="standard", max_attempts=2,
                         read_timeout=case.read_timeout)


def handler_for(case: Case):
    return REGISTRY.get("lmi" if case.endpoint == "m-lmi" else "tgi")


@pytest.mark.parametrize(("case", "path"), MATRIX)
def test_fault_matrix(matrix_endpoint, case: Case, path: str):
    server = matrix_endpoint
    server.clear_faults()
    session = make_session(server, case)
    handler = handler_for(case)
    if case.fault:
        server.inject(case.endpoint if case.endpoint in ("m-tgi", "m-lmi") else "m-tgi", case.fault)
    before = server.calls[case.endpoint]

    if path == "single":
        with pytest.raises(case.error) as info:
            invoke(session, case.endpoint, PROMPT, handler)
        assert server.calls[case.endpoint] - before == (case.attempts if case.fault else 0)
    elif path == "stream":
        s = stream(session, case.endpoint, PROMPT, handler)
        with pytest.raises(case.error) as info:
            list(s)
        if case.stream_only:
            assert info.value.partial == "Peter stayed with"  # the text that arrived is kept
            assert s.result.text == "Peter stayed with" and s.result.interrupted
    elif path == "batch":
        if case.fault:
            server.clear_faults()
            server.inject(case.endpoint, Fault(**{**vars(case.fault), "times": case.attempts}))  # item 0 only
        items = ["a", "b", "c", "d"]
        batch = run_batch(lambda p: invoke(session, case.endpoint, p, handler), items, 1, progress=False)
        if case.error is Throttled and case.fault:  # the batch backs off and tries again: nothing fails
            assert not batch.failed and batch.limiter.throttles >= 1
            assert batch.texts == ["You said: a", "You said: b", "You said: c", "You said: d"]
            info = None
        else:
            failed = batch.failed
            assert failed and all(isinstance(f.error, case.error) for f in failed)
            if case.fault:
                assert [f.index for f in failed] == [0]
                assert batch.texts[1:] == ["You said: b", "You said: c", "You said: d"]  # kept, in order
                assert batch.retry().texts == ["You said: a", "You said: b", "You said: c", "You said: d"]
            info = pytest.ExceptionInfo.from_exc_info((type(failed[0].error), failed[0].error, None))
    else:  # qa-map
        if case.fault:
            server.clear_faults()
            server.inject(case.endpoint, Fault(**{**vars(case.fault), "times": case.attempts}))

        def ask(prompt: str):
            return invoke(session, case.endpoint, prompt, handler, {"max_new_tokens": 32})

        def ask_many(prompts: list[str]):
            return [o.error if not hasattr(o, "text") else o for o in run_batch(ask, prompts, 1, progress=False)]

        def qa(**kwargs):
            return answer("When did the committee meet?", DOCS, ask, ask_many, mode="map-reduce",
                          context_tokens=256, max_new_tokens=32, **kwargs)

        if case.fault and case.error is Throttled:  # absorbed by the map step's back-off
            assert not qa().partial
            info = None
        elif case.fault:
            with pytest.raises(PartialAnswer) as partial:  # never a whole-looking answer from 3 of 4 chunks
                qa()
            assert "1 of 4 document chunks failed" in partial.value.explain() and len(partial.value.failures) == 1
            server.inject(case.endpoint, Fault(**{**vars(case.fault), "times": case.attempts}))
            result = qa(allow_partial=True)
            failures = result.data["map_failures"]
            assert result.partial and "partial" in result.footer()
            assert len(failures) == 1 and len(result.data["map_answers"]) == len(result.sources) == 3
            info = None
        else:
            with pytest.raises(case.error) as info:
                answer("When?", DOCS, ask, ask_many, mode="map-reduce", context_tokens=256, max_new_tokens=32)

    if info is not None:
        explanation = info.value.explain()
        assert case.words in explanation
        assert "\n" not in explanation.strip() or len(explanation) < 600  # one short paragraph
    server.clear_faults()
    if case.endpoint in ("m-tgi", "m-lmi") and case.region == "us-east-1":
        assert invoke(session, case.endpoint, "again", handler).text == "You said: again"  # still usable


@pytest.mark.parametrize("path", ["stream"])
def test_fault_matrix_stream_truncated_without_end_marker(matrix_endpoint, path):
    """Row "stream truncated without end marker": the stream ends cleanly before TGI's final event."""
    server = matrix_endpoint
    server.clear_faults()
    server.inject("m-tgi", Fault("lmi-error", after_parts=3))  # TGI has no in-band error: the stream just ends
    s = stream(make_session(server, CASES[0]), "m-tgi", PROMPT, REGISTRY.get("tgi"))
    assert "".join(s) == "Peter stayed with"
    assert s.result.truncated and s.result.status == "truncated" and not s.result.interrupted
    assert invoke(make_session(server, CASES[0]), "m-tgi", "again", REGISTRY.get("tgi")).text == "You said: again"


def test_fault_matrix_qa_with_most_map_calls_failing(ip, local):
    from tests.test_qa import corpus

    ip.user_ns["memos"] = corpus(40)
    line = "faulty --handler tgi --docs memos --mode map-reduce --context-tokens 1024 --concurrency 4"
    local.inject("faulty", Fault("model-error", times=30))
    with pytest.raises(PartialAnswer) as info:  # never a confident answer from a quarter of the chunks
        ip.run_cell_magic("sagemaker", line, "Where did the archive move?")
    assert "30 of 40 document chunks failed" in info.value.explain()
    local.inject("faulty", Fault("model-error", times=5))
    result = ip.run_cell_magic("sagemaker", f"{line} --allow-partial", "Where did the archive move?")
    assert result.partial and "partial" in result.footer() and len(result.data["map_failures"]) == 5


def test_fault_matrix_qa_interrupted(ip, local):
    import os
    import signal
    import threading
    import time

    from tests.test_qa import corpus

    ip.user_ns["memos"] = corpus(40)
    line = "slow --handler tgi --docs memos --mode map-reduce --context-tokens 1024 --concurrency 2"
    before = local.calls["slow"]

    def interrupt_after_some_calls() -> None:
        while local.calls["slow"] - before < 6:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_some_calls, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C stops the cell: no reduce over what finished
        ip.run_cell_magic("sagemaker", line, "Where did the archive move?")
    time.sleep(0.2)  # the calls in flight finish (and are journaled)
    first = local.calls["slow"] - before
    assert first < 40
    result = ip.run_cell_magic("sagemaker", line, "Where did the archive move?")
    second = local.calls["slow"] - before - first
    assert "north wing" in result.text and second <= 40 - first + 2 + 1  # the rest (+ in flight) and the reduce
