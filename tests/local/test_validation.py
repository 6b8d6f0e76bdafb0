"""Malformed model parameters answered as the real containers do, and SigV4's 5-minute clock skew."""

from __future__ import annotations

import datetime as dt
import json
import math

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig


def runtime(server: LocalEndpoint, **config):
    return boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id="local-access-key", aws_secret_access_key="local-secret",
                        config=Config(**config))


def model_error(call) -> dict:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    return response


@pytest.mark.parametrize(("parameters", "named"), [
    ({"max_new_tokens": "abc"}, "max_new_tokens"),
    ({"max_new_tokens": 12.5}, "max_new_tokens"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": [0.9]}, "top_p"),
    ({"seed": True}, "seed"),
    ({"stop": 5}, "stop"),
    ({"temperature": -1}, "temperature"),
])
def test_tgi_rejects_bad_parameters_with_422_validation_body(local, parameters, named):
    body = json.dumps({"inputs": "hi", "parameters": parameters})  # NaN goes out as the bare token NaN
    before = local.calls["tgi"]
    response = model_error(lambda: runtime(local).invoke_endpoint(EndpointName="tgi", Body=body))
    assert response["OriginalStatusCode"] == 422
    original = json.loads(response["OriginalMessage"])
    assert original["error_type"] == "validation"
    assert f"`{named}`" in original["error"]
    assert 'Received client error (422) from primary with message "{' in response["Error"]["Message"]
    assert local.calls["tgi"] - before == 1  # answered, not dropped: the client did not retry


def test_lmi_rejects_bad_parameters_with_400_djl_body(local):
    body = json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": "abc"}})
    response = model_error(lambda: runtime(local).invoke_endpoint(EndpointName="lmi", Body=body))
    assert response["OriginalStatusCode"] == 400
    original = json.loads(response["OriginalMessage"])
    assert original["code"] == 400 and original["type"] == "BadRequestException"
    assert "`max_new_tokens` must be an integer" in original["message"]


def test_bad_parameters_on_the_stream_route_are_a_model_error_before_any_event(local):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many", "stream": True})
    response = model_error(
        lambda: runtime(local).invoke_endpoint_with_response_stream(EndpointName="tgi-messages", Body=body))
    assert "`max_tokens` must be an integer" in json.loads(response["OriginalMessage"])["error"]


def test_the_server_keeps_serving_after_bad_parameters(local):
    client = runtime(local)
    for _ in range(3):
        model_error(lambda: client.invoke_endpoint(
            EndpointName="tgi", Body=json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": "abc"}})))
    answer = client.invoke_endpoint(EndpointName="tgi", Body=json.dumps({"inputs": "hi"}))
    assert json.loads(answer["Body"].read()) == [{"generated_text": "You said: hi"}]


@pytest.fixture(scope="module")
def signed() -> LocalEndpoint:
    config = ServerConfig(endpoints=[EndpointSpec("e", "tgi", "deterministic")],
                          credentials={"local-access-key": "local-secret"})
    with LocalEndpoint(config) as server:
        yield server


def clock_off_by(monkeypatch: pytest.MonkeyPatch, minutes: float) -> None:
    """The client machine's clock is ``minutes`` away from the server's (botocore signs with it)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes))


@pytest.mark.parametrize(("minutes", "words"), [(-10, "Signature expired: "), (10, "Signature not yet current: "),
                                                (-60 * 24 * 365 * 6, "Signature expired: 20")])
def test_signature_outside_five_minutes_is_refused_as_aws_does(signed, monkeypatch, minutes, words):
    clock_off_by(monkeypatch, minutes)
    with pytest.raises(ClientError) as info:
        runtime(signed).invoke_endpoint(EndpointName="e", Body=b'{"inputs": "hi"}')
    error = info.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Message"].startswith(words)
    assert ("- 5 min.)" if minutes < 0 else "+ 5 min.)") in error["Message"]


def test_signature_within_five_minutes_is_accepted(signed, monkeypatch):
    clock_off_by(monkeypatch, -4)
    answer = runtime(signed).invoke_endpoint(EndpointName="e", Body=b'{"inputs": "hi"}')
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_sts_names_an_expired_signature_signature_does_not_match(signed, monkeypatch):
    clock_off_by(monkeypatch, -30)
    sts = boto3.client("sts", endpoint_url=signed.url, region_name="us-east-1",
                       aws_access_key_id="local-access-key", aws_secret_access_key="local-secret")
    with pytest.raises(ClientError) as info:
        sts.get_caller_identity()
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert "Signature expired" in info.value.response["Error"]["Message"]
