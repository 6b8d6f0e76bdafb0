"""Async inference on the local endpoint: boto3's own invoke_endpoint_async, with moto's server as S3."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sm_magic.local import EndpointSpec, Fault, LocalEndpoint, ServerConfig
from tests.conftest import SEED_PROMPT

INPUT_BUCKET = "async-inputs"


def client(service: str, url: str, **config):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                        aws_secret_access_key="s", config=Config(s3={"addressing_style": "path"}, **config))


@pytest.fixture(scope="module")
def s3(moto_server):
    s3 = client("s3", moto_server)
    s3.create_bucket(Bucket=INPUT_BUCKET)
    return s3


@pytest.fixture(scope="module")
def server(moto_server, s3):
    specs = [EndpointSpec("queued", "tgi", "deterministic", async_=True),
             EndpointSpec("queued-lmi", "lmi", "deterministic", async_=True,
                          s3_output_path="s3://team-results/lmi/out/", s3_failure_path="s3://team-results/lmi/err"),
             EndpointSpec("realtime", "tgi", "deterministic")]
    with LocalEndpoint(ServerConfig(endpoints=specs, s3_endpoint_url=moto_server)) as server:
        yield server


def upload(s3, body: bytes) -> str:
    key = f"requests/{uuid.uuid4()}.json"
    s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body)
    return f"s3://{INPUT_BUCKET}/{key}"


def fetch(s3, uri: str, timeout: float = 20.0) -> dict:
    """The object at ``uri`` once it exists (async answers arrive later)."""
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3.get_object(Bucket=bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, f"{uri} never arrived"
            time.sleep(0.05)


def exists(s3, uri: str) -> bool:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return s3.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] > 0


def tgi(prompt: str = SEED_PROMPT, **params) -> bytes:
    return json.dumps({"inputs": prompt, "parameters": params}).encode()


def test_boto3_invoke_endpoint_async_writes_the_answer_to_the_output_path(server, s3):
    runtime = client("sagemaker-runtime", server.url)
    response = runtime.invoke_endpoint_async(EndpointName="queued", InputLocation=upload(s3, tgi(max_new_tokens=40)),
                                             ContentType="application/json", InferenceId="job-0001")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "job-0001"
    assert response["OutputLocation"] == "s3://sm-magic-local/async-endpoint-outputs/queued/job-0001.out"
    assert response["FailureLocation"] == "s3://sm-magic-local/async-endpoint-failures/queued/job-0001-error.out"
    output = fetch(s3, response["OutputLocation"])
    assert output["ContentType"] == "application/json"
    assert "3 days" in json.loads(output["Body"].read())[0]["generated_text"]
    assert not exists(s3, response["FailureLocation"])


def test_output_paths_come_from_the_endpoint_config_and_ids_are_generated(server, s3):
    runtime = client("sagemaker-runtime", server.url)
    sm = client("sagemaker", server.url)
    described = sm.describe_endpoint_config(EndpointConfigName="queued-lmi-config")["AsyncInferenceConfig"]
    assert described["OutputConfig"] == {"S3OutputPath": "s3://team-results/lmi/out",
                                         "S3FailurePath": "s3://team-results/lmi/err"}
    assert "AsyncInferenceConfig" not in sm.describe_endpoint_config(EndpointConfigName="realtime-config")
    response = runtime.invoke_endpoint_async(EndpointName="queued-lmi", InputLocation=upload(s3, b'{"inputs": "hi"}'))
    inference_id = response["InferenceId"]
    assert str(uuid.UUID(inference_id)) == inference_id
    assert response["OutputLocation"] == f"s3://team-results/lmi/out/{inference_id}.out"
    assert json.loads(fetch(s3, response["OutputLocation"])["Body"].read()) == {"generated_text": "You said: hi"}


def test_inline_body_is_accepted_instead_of_an_input_location(server, s3):
    runtime = client("sagemaker-runtime", server.url)
    response = runtime.invoke_endpoint_async(EndpointName="queued", Body=tgi("say hello"))
    answer = json.loads(fetch(s3, response["OutputLocation"])["Body"].read())
    assert answer == [{"generated_text": "You said: say hello"}]


def test_a_model_error_becomes_the_failure_object(server, s3):
    server.inject("queued", Fault("model-error", status=500, message="CUDA out of memory"))
    runtime = client("sagemaker-runtime", server.url)
    response = runtime.invoke_endpoint_async(EndpointName="queued", InputLocation=upload(s3, tgi()))
    failure = fetch(s3, response["FailureLocation"])
    text = failure["Body"].read().decode()
    assert 'Received server error (500) from primary with message "CUDA out of memory"' in text
    assert failure["ContentType"] == "text/plain"
    assert not exists(s3, response["OutputLocation"])


def test_bad_parameters_and_a_missing_input_object_fail_with_the_reason(server, s3):
    runtime = client("sagemaker-runtime", server.url)
    bad = runtime.invoke_endpoint_async(EndpointName="queued", InputLocation=upload(s3, tgi(max_new_tokens="abc")))
    assert "`max_new_tokens` must be an integer" in fetch(s3, bad["FailureLocation"])["Body"].read().decode()
    missing = runtime.invoke_endpoint_async(EndpointName="queued", InputLocation=f"s3://{INPUT_BUCKET}/nothing.json")
    text = fetch(s3, missing["FailureLocation"])["Body"].read().decode()
    assert text.startswith(f"ValidationError: Could not read the input s3://{INPUT_BUCKET}/nothing.json")


def test_real_time_calls_to_an_async_endpoint_and_async_calls_to_a_real_time_one_are_refused(server, s3):
    runtime = client("sagemaker-runtime", server.url, retries={"total_max_attempts": 1})
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName="queued", Body=tgi())
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "is an asynchronous inference endpoint" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="is an asynchronous inference endpoint"):
        runtime.invoke_endpoint_with_response_stream(EndpointName="queued", Body=tgi())
    with pytest.raises(ClientError, match="is not an asynchronous inference endpoint"):
        runtime.invoke_endpoint_async(EndpointName="realtime", InputLocation=upload(s3, tgi()))
    with pytest.raises(ClientError, match="must have value between 1 and 21600"):
        runtime.invoke_endpoint_async(EndpointName="queued", InputLocation=upload(s3, tgi()), RequestTTLSeconds=30000)


def test_stats_count_async_submissions_and_outcomes(server, s3):
    def outcomes() -> dict:
        with urllib.request.urlopen(f"{server.url}/_local/stats") as answer:
            return json.loads(answer.read())["endpoints"]["queued-lmi"]

    before = outcomes()
    runtime = client("sagemaker-runtime", server.url)
    server.inject("queued-lmi", Fault("internal"))
    failed = runtime.invoke_endpoint_async(EndpointName="queued-lmi", InputLocation=upload(s3, b'{"inputs": "a"}'))
    assert fetch(s3, failed["FailureLocation"])["Body"].read().startswith(b"InternalFailure: ")
    ok = runtime.invoke_endpoint_async(EndpointName="queued-lmi", InputLocation=upload(s3, b'{"inputs": "b"}'))
    fetch(s3, ok["OutputLocation"])
    after = outcomes()
    submitted = after["operations"]["InvokeEndpointAsync"] - before["operations"].get("InvokeEndpointAsync", 0)
    assert submitted == 2
    assert after["async"]["failed"] - before["async"].get("failed", 0) == 1
    assert after["async"]["succeeded"] - before["async"].get("succeeded", 0) == 1


def test_a_request_older_than_its_ttl_fails_as_expired(moto_server, s3):
    spec = EndpointSpec("one-worker", "tgi", "deterministic", async_=True)
    config = ServerConfig(endpoints=[spec], s3_endpoint_url=moto_server, async_workers=1)
    with LocalEndpoint(config) as server:
        server.inject("one-worker", Fault("latency", seconds=1.5))  # the only worker is busy for 1.5 s
        # botocore refuses a TTL under AWS's 60 s minimum; the local endpoint accepts 1 s to make this testable.
        runtime = client("sagemaker-runtime", server.url, parameter_validation=False)
        first = runtime.invoke_endpoint_async(EndpointName="one-worker", InputLocation=upload(s3, tgi()))
        second = runtime.invoke_endpoint_async(EndpointName="one-worker", InputLocation=upload(s3, tgi()),
                                               RequestTTLSeconds=1)
        assert "3 days" in fetch(s3, first["OutputLocation"])["Body"].read().decode()
        text = fetch(s3, second["FailureLocation"])["Body"].read().decode()
        assert text.startswith("RequestExpired: Request expired") and "RequestTTLSeconds (1 s)" in text


def test_async_endpoints_are_declared_in_config_files_and_flags_and_need_s3(tmp_path, moto_server):
    assert EndpointSpec.parse("later=lmi:async:concurrency=2").async_
    assert not EndpointSpec.parse("now=lmi").async_
    path = tmp_path / "local.toml"
    path.write_text(f's3_endpoint_url = "{moto_server}"\n\n[[endpoints]]\nname = "q"\nasync = true\n'
                    's3_output_path = "s3://mine/out"\n')
    config = ServerConfig.load(path)
    assert config.endpoints[0].async_ and config.endpoints[0].output_path == "s3://mine/out"
    with pytest.raises(ValueError, match="need an S3 service"):
        LocalEndpoint(ServerConfig(endpoints=[EndpointSpec("q", async_=True, backend="deterministic")]))


def test_serve_offers_async_endpoints_on_the_given_s3_service(moto_server, s3):
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "sm_magic.cli", "serve", "--port", str(port), "--backend", "deterministic",
         "--endpoint", "later=tgi:async", "--s3-endpoint-url", moto_server],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Local SageMaker endpoint" in process.stdout.readline()
        runtime = client("sagemaker-runtime", f"http://127.0.0.1:{port}")
        response = runtime.invoke_endpoint_async(EndpointName="later", InputLocation=upload(s3, tgi("ping")))
        assert response["OutputLocation"].startswith("s3://sm-magic-local/async-endpoint-outputs/later/")
        answer = json.loads(fetch(s3, response["OutputLocation"])["Body"].read())
        assert answer == [{"generated_text": "You said: ping"}]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
