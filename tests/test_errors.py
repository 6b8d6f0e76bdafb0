"""Every error type, triggered for real through boto3 against the local endpoint, and its message."""

from __future__ import annotations

import pytest

from sm_magic.calls import invoke, stream
from sm_magic.errors import (
    ConnectionFailed,
    CredentialsError,
    EndpointNotFound,
    HandlerError,
    ModelError,
    ReadTimeout,
    ServiceError,
    StreamError,
    Throttled,
    ValidationFailed,
)
from sm_magic.handlers.registry import Registry
from sm_magic.local import EndpointSpec, Fault, LocalEndpoint, ServerConfig
from sm_magic.session import Session, SessionSettings
from tests.conftest import SEED_PROMPT

TGI = Registry().get("tgi")
LMI = Registry().get("lmi")


@pytest.fixture
def quick(local) -> Session:
    """Fast retries so retried faults finish quickly."""
    return Session.local(local.url, retry_mode="standard", max_attempts=2)


def test_endpoint_not_found_says_how_to_list(quick):
    with pytest.raises(EndpointNotFound) as info:
        invoke(quick, "no-such-endpoint", "hi", TGI)
    text = info.value.explain()
    assert "'no-such-endpoint' was not found in region us-east-1" in text
    assert "%sagemaker endpoints" in text


def test_model_error_shows_the_containers_message_and_cloudwatch_link(quick, local):
    local.inject("faulty", Fault("model-error", status=400, message="Input too long for this model"))
    with pytest.raises(ModelError) as info:
        invoke(quick, "faulty", "hi", TGI)
    error = info.value
    assert error.original_status == 400
    assert "Input too long for this model" in error.explain()
    assert error.cloudwatch_url == ("https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
                                    "#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FEndpoints$252Ffaulty")
    assert error.cloudwatch_url in error.explain()


def test_model_error_is_not_retried(quick, local):
    local.inject("faulty", Fault("model-error", times=5))
    before = local.calls["faulty"]
    with pytest.raises(ModelError):
        invoke(quick, "faulty", "hi", TGI)
    assert local.calls["faulty"] - before == 1


@pytest.mark.parametrize(("kind", "error", "words"), [
    ("throttle", Throttled, "is throttling requests"),
    ("not-ready", Throttled, "still loading the model"),
    ("internal", ServiceError, "500 InternalFailure"),
    ("unavailable", ServiceError, "503 ServiceUnavailable"),
    ("dependency", ServiceError, "530 InternalDependencyException"),
])
def test_service_side_errors_after_retries(quick, local, kind, error, words):
    retried = kind != "dependency"  # throttling, not-ready, 500/502/503/504 are retried; 530 is not
    local.inject("faulty", Fault(kind, times=2 if retried else 1))
    before = local.calls["faulty"]
    with pytest.raises(error) as info:
        invoke(quick, "faulty", "hi", TGI)
    assert words in info.value.explain()
    assert local.calls["faulty"] - before == (2 if retried else 1)
    assert invoke(quick, "faulty", "hi", TGI).text == "You said: hi"  # the next call works


def test_transient_fault_is_retried_to_success(quick, local):
    local.inject("faulty", Fault("unavailable", times=1))
    assert invoke(quick, "faulty", "hi", TGI).text == "You said: hi"


def test_read_timeout(local):
    local.inject("faulty", Fault("latency", seconds=0.6))
    with pytest.raises(ReadTimeout) as info:
        invoke(Session.local(local.url, read_timeout=0.2), "faulty", "hi", TGI)
    assert "did not answer within the read timeout" in info.value.explain()
    assert "read_timeout=120" in info.value.explain()


def test_connection_reset_and_refused(quick, local):
    local.inject("faulty", Fault("reset", times=2))
    with pytest.raises(ConnectionFailed, match="closed the connection"):
        invoke(quick, "faulty", "hi", TGI)
    nowhere = Session.local("http://127.0.0.1:9", max_attempts=1, connect_timeout=0.5)
    with pytest.raises(ConnectionFailed, match="Could not reach"):
        invoke(nowhere, "tgi", "hi", TGI)


@pytest.mark.parametrize(("kind", "words"), [
    ("stream-error", "ModelStreamError"), ("stream-failure", "InternalStreamFailure"),
    ("drop", "broke while the answer was arriving"), ("corrupt", "ChecksumMismatch"),
    ("lmi-error", "reported an error in the stream")])
def test_mid_stream_failures_keep_the_text_that_arrived(quick, local, kind, words):
    local.inject("faulty-lmi", Fault(kind, after_parts=3))
    s = stream(quick, "faulty-lmi", SEED_PROMPT, LMI)
    with pytest.raises(StreamError) as info:
        list(s)
    assert words in info.value.explain()
    assert info.value.partial == "Therefore, Peter stayed"
    assert s.result.text == "Therefore, Peter stayed" and s.result.interrupted


def test_handler_error_for_a_malformed_body(quick, local):
    local.inject("faulty", Fault("malformed"))
    with pytest.raises(HandlerError) as info:
        invoke(quick, "faulty", "hi", TGI)
    assert "Content handler 'tgi' failed: the answer is not JSON" in info.value.explain()


def test_validation_failure(quick):
    with pytest.raises(ValidationFailed, match="Target variant"):
        from sm_magic.options import InvokeOptions

        invoke(quick, "multi", "hi", TGI, options=InvokeOptions(target_variant="purple"))


def test_rejected_and_missing_credentials():
    config = ServerConfig(endpoints=[EndpointSpec("e", "tgi", "deterministic")], credentials={"good": "secret"})
    with LocalEndpoint(config) as server:
        wrong = Session(SessionSettings(region="us-east-1", endpoint_url=server.url, access_key_id="good",
                                        secret_access_key="not-the-secret"))
        with pytest.raises(CredentialsError) as info:
            invoke(wrong, "e", "hi", TGI)
        assert "InvalidSignatureException" in info.value.explain()
        assert "not-the-secret" not in info.value.explain()


def test_missing_credentials(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsError, match="No usable AWS credentials"):
        invoke(Session(SessionSettings(region="us-east-1")), "tgi", "hi", TGI)


def test_missing_region(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(CredentialsError, match="No AWS region"):
        invoke(Session(SessionSettings()), "tgi", "hi", TGI)


def test_errors_render_as_one_paragraph_in_ipython():
    error = EndpointNotFound("Endpoint 'x' was not found.", hint="List them.")
    [line] = error._render_traceback_()
    assert "EndpointNotFound" in line and "List them." in line
