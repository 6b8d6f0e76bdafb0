"""The local endpoint through real boto3, the aws CLI and langchain-aws: wire protocol, errors, SigV4."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from sm_magic.local import EndpointSpec, Fault, LocalEndpoint, ServerConfig
from tests.conftest import SEED_PROMPT


def runtime(server: LocalEndpoint, key: str = "local-access-key", secret: str = "local-secret", **config):
    return boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, **config))


def tgi_body(prompt: str = SEED_PROMPT, stream: bool = False, **params) -> bytes:
    return json.dumps({"inputs": prompt, "parameters": params, "stream": stream}).encode()


def test_invoke_returns_tgi_answer_with_variant_and_echoed_attributes(local):
    response = runtime(local).invoke_endpoint(
        EndpointName="endpoint-name", Body=tgi_body(max_new_tokens=40), ContentType="application/json",
        CustomAttributes="accept_eula=true; trace=1")
    answer = json.loads(response["Body"].read())
    assert "3 days" in answer[0]["generated_text"]
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "accept_eula=true; trace=1"


def test_stream_is_event_stream_of_tgi_sse_lines(local):
    response = runtime(local).invoke_endpoint_with_response_stream(
        EndpointName="endpoint-name", Body=tgi_body(stream=True), ContentType="application/json")
    parts = [e["PayloadPart"]["Bytes"] for e in response["Body"]]
    assert len(parts) > 3
    assert all(p.startswith(b"data:") and p.endswith(b"\n\n") for p in parts)
    tokens = [json.loads(p[5:])["token"]["text"] for p in parts[:-1]]
    assert "".join(tokens) == json.loads(parts[-1][5:])["generated_text"]
    assert response["ContentType"] == "text/event-stream"


def test_stream_without_stream_flag_sends_the_whole_body(local):
    response = runtime(local).invoke_endpoint_with_response_stream(
        EndpointName="endpoint-name", Body=tgi_body(stream=False))
    body = b"".join(e["PayloadPart"]["Bytes"] for e in response["Body"])
    assert "3 days" in json.loads(body)[0]["generated_text"]


def test_unknown_endpoint_is_validation_error_with_aws_wording(local):
    with pytest.raises(ClientError) as info:
        runtime(local).invoke_endpoint(EndpointName="nope", Body=b"{}")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert info.value.response["Error"]["Message"] == "Endpoint nope of account 000000000000 not found."
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_bad_endpoint_name_is_rejected_by_pattern(local):
    with pytest.raises(ClientError) as info:
        runtime(local).invoke_endpoint(EndpointName="bad_name!", Body=b"{}")
    assert "regular expression pattern" in info.value.response["Error"]["Message"]


def test_a_100_character_endpoint_name_fails_the_length_as_aws_says(local):
    name = "a" * 100
    with pytest.raises(ClientError) as info:
        runtime(local).invoke_endpoint(EndpointName=name, Body=b"{}")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert info.value.response["Error"]["Message"] == (
        f"1 validation error detected: Value '{name}' at 'endpointName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63")


def test_a_long_name_that_breaks_the_pattern_too_counts_two_errors(local):
    with pytest.raises(ClientError) as info:
        runtime(local).invoke_endpoint(EndpointName="bad_" + "a" * 70, Body=b"{}")
    message = info.value.response["Error"]["Message"]
    assert message.startswith("2 validation errors detected: ")
    assert "regular expression pattern" in message and "length less than or equal to 63" in message


def test_model_error_has_original_status_message_and_log_arn(local):
    local.inject("faulty", Fault("model-error", status=422, message="Input validation error"))
    with pytest.raises(ClientError) as info:
        runtime(local).invoke_endpoint(EndpointName="faulty", Body=tgi_body())
    response = info.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == 422
    assert response["OriginalMessage"] == "Input validation error"
    assert response["LogStreamArn"].endswith("log-group:/aws/sagemaker/Endpoints/faulty")


def test_container_rejects_a_body_it_cannot_read_as_model_error(local):
    with pytest.raises(ClientError) as info:
        runtime(local).invoke_endpoint(EndpointName="tgi", Body=b'{"text_inputs": "x"}')
    assert info.value.response["Error"]["Code"] == "ModelError"
    assert info.value.response["OriginalStatusCode"] == 422


@pytest.mark.parametrize(("kind", "code", "status"), [
    ("throttle", "ThrottlingException", 429), ("not-ready", "ModelNotReadyException", 429),
    ("internal", "InternalFailure", 500), ("unavailable", "ServiceUnavailable", 503),
    ("dependency", "InternalDependencyException", 530)])
def test_service_errors_have_their_codes(local, kind, code, status):
    local.inject("faulty", Fault(kind))
    with pytest.raises(ClientError) as info:
        runtime(local).invoke_endpoint(EndpointName="faulty", Body=tgi_body())
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.mark.parametrize(("kind", "code"), [("stream-error", "ModelStreamError"),
                                            ("stream-failure", "InternalStreamFailure")])
def test_mid_stream_errors_are_modelled_exception_frames(local, kind, code):
    local.inject("faulty", Fault(kind, after_parts=2, message="the model stopped"))
    response = runtime(local).invoke_endpoint_with_response_stream(EndpointName="faulty", Body=tgi_body(stream=True))
    seen = []
    with pytest.raises(EventStreamError) as info:
        for event in response["Body"]:
            seen.append(event)
    assert len(seen) == 2
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["Error"]["Message"] == "the model stopped"


def test_invoke_headers_are_honoured(local):
    client = runtime(local)
    response = client.invoke_endpoint(EndpointName="multi", Body=tgi_body(), TargetVariant="green",
                                      SessionId="NEW_SESSION")
    assert response["InvokedProductionVariant"] == "green"
    assert "; Expires=" in response["NewSessionId"]
    with pytest.raises(ClientError, match="Target variant purple not found"):
        client.invoke_endpoint(EndpointName="multi", Body=tgi_body(), TargetVariant="purple")
    messages = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ClientError, match="Inference Component Name header is required"):
        client.invoke_endpoint(EndpointName="components", Body=messages)
    ok = client.invoke_endpoint(EndpointName="components", Body=messages, InferenceComponentName="ic-small")
    assert json.loads(ok["Body"].read())["choices"][0]["message"]["content"] == "You said: hi"


def test_oversize_body_is_rejected(local):
    with pytest.raises(ClientError, match="exceeds the maximum"):
        runtime(local).invoke_endpoint(EndpointName="endpoint-name", Body=b"x" * (6 * 1024 * 1024 + 1))


def test_control_plane_lists_and_describes_endpoints(local):
    sm = boto3.client("sagemaker", endpoint_url=local.url, region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")
    names = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
    assert {"tgi", "lmi", "endpoint-name"} <= set(names)
    described = sm.describe_endpoint(EndpointName="lmi")
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert "djl-inference" in model["PrimaryContainer"]["Image"]
    with pytest.raises(ClientError) as info:
        sm.describe_endpoint(EndpointName="nope")
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_sigv4_is_verified_when_configured():
    config = ServerConfig(endpoints=[EndpointSpec("e", "tgi", "deterministic")], credentials={"AKIDLOCAL": "right"})
    with LocalEndpoint(config) as server:
        good = runtime(server, "AKIDLOCAL", "right").invoke_endpoint(EndpointName="e", Body=tgi_body())
        assert good["ResponseMetadata"]["HTTPStatusCode"] == 200
        with pytest.raises(ClientError) as wrong:
            runtime(server, "AKIDLOCAL", "wrong").invoke_endpoint(EndpointName="e", Body=tgi_body())
        assert wrong.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert wrong.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as unknown:
            runtime(server, "AKIDOTHER", "right").invoke_endpoint(EndpointName="e", Body=tgi_body())
        assert unknown.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_many_concurrent_requests_on_keep_alive_connections(local):
    client = runtime(local, max_pool_connections=16)
    errors = []

    def work():
        try:
            for _ in range(10):
                client.invoke_endpoint(EndpointName="endpoint-name", Body=tgi_body())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(16)]
    before = local.calls["endpoint-name"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert local.calls["endpoint-name"] - before == 160


def test_faults_can_be_scripted_over_http(local):
    from sm_magic.local.faults import inject_remote

    inject_remote(local.url, "faulty", Fault("internal", times=1))
    with pytest.raises(ClientError, match="InternalFailure"):
        runtime(local).invoke_endpoint(EndpointName="faulty", Body=tgi_body())
    runtime(local).invoke_endpoint(EndpointName="faulty", Body=tgi_body())  # the fault was used up
    with urllib.request.urlopen(f"{local.url}/_local/calls") as answer:
        assert json.loads(answer.read())["faulty"] >= 2


@pytest.mark.parametrize(("fault", "said"), [
    ({"times": 0}, "times=0: a fault applies to the next 1 or more calls"), ({"times": -2}, "times=-2"),
    ({"times": 1.5}, "times=1.5"), ({"times": True}, "times=True"), ({"seconds": -1}, "seconds=-1"),
    ({"seconds": "x"}, "seconds='x'"), ({"status": "abc"}, "status='abc'"), ({"status": 99999}, "status=99999"),
    ({"after_parts": -3}, "after_parts=-3"), ({"message": 7}, "message=7")])
def test_a_fault_that_cannot_apply_is_refused_not_applied_forever(local, fault, said):
    with pytest.raises(ValueError, match=re.escape(said)):
        Fault("internal", **fault)
    for endpoint, faults in (("faulty", [{"kind": "internal", **fault}]), (None, []), (["faulty"], [])):
        body = json.dumps({"endpoint": endpoint, "faults": faults}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{local.url}/_local/faults", data=body, method="POST"))
        assert refused.value.code == 400 and "bad fault" in refused.value.read().decode()
    runtime(local).invoke_endpoint(EndpointName="faulty", Body=tgi_body())  # nothing was injected


def test_aws_cli_invokes_the_local_endpoint(local, tmp_path):
    out = tmp_path / "answer.json"
    body = tmp_path / "body.json"
    body.write_bytes(tgi_body())
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    subprocess.run(
        [sys.executable, "-m", "awscli", "sagemaker-runtime", "invoke-endpoint", "--endpoint-url", local.url,
         "--endpoint-name", "endpoint-name", "--content-type", "application/json",
         "--body", f"fileb://{body}", str(out)],
        check=True, env=env, capture_output=True, timeout=60)
    assert "3 days" in json.loads(out.read_text())[0]["generated_text"]


def test_langchain_aws_sagemaker_endpoint_works_unchanged(aws_env):
    from langchain_aws.llms.sagemaker_endpoint import LLMContentHandler, SagemakerEndpoint

    class Handler(LLMContentHandler):
        content_type = "application/json"
        accepts = "application/json"

        def transform_input(self, prompt, model_kwargs):
            return json.dumps({"inputs": prompt, "parameters": model_kwargs, "stream": True}).encode()

        def transform_output(self, output):
            if isinstance(output, bytes):  # a streamed line
                line = output.decode().removeprefix("data:")
                return json.loads(line)["token"]["text"] if line.strip() else ""
            return json.loads(output.read())[0]["generated_text"]

    # TGI's SSE lines all end in a newline. (LMI's last line does not, and langchain-aws's line
    # iterator then waits forever: langchain-aws#128. sm_magic's decoder flushes it.)
    llm = SagemakerEndpoint(endpoint_name="tgi", region_name="us-east-1", content_handler=Handler(), streaming=True)
    chunks = list(llm.stream(SEED_PROMPT))
    assert "3 days" in "".join(chunks)
    assert len(chunks) > 3


def test_cli_serve_prints_environment_and_stops_on_ctrl_c(tmp_path):
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "sm_magic.cli", "serve", "--port", str(port), "--backend", "deterministic",
         "--endpoint", "endpoint-name=tgi", "--endpoint", "chat=tgi-messages"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(5)]
        assert f"Local SageMaker endpoint at http://127.0.0.1:{port}" in lines[0]
        assert any(f"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:{port}" in line for line in lines)
        client = boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="k", aws_secret_access_key="s")
        answer = client.invoke_endpoint(EndpointName="chat", Body=json.dumps(
            {"messages": [{"role": "user", "content": "ping"}]}))
        assert json.loads(answer["Body"].read())["choices"][0]["message"]["content"] == "You said: ping"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "Stopped." in process.stdout.read()
    finally:
        process.kill()


def test_server_binds_loopback_by_default(local):
    assert local.config.host == "127.0.0.1"
    assert local._httpd.server_address[0] == "127.0.0.1"


def test_config_file_declares_endpoints_variants_latency_and_faults(tmp_path):
    path = tmp_path / "local.toml"
    path.write_text('''
region = "eu-west-1"

[[endpoints]]
name = "qa"
format = "lmi"
backend = "deterministic"
variants = ["blue", "green"]
latency = 0.01

[[endpoints.faults]]
kind = "throttle"
times = 1
''')
    with LocalEndpoint(ServerConfig.load(path)) as server:
        client = boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="eu-west-1",
                              aws_access_key_id="k", aws_secret_access_key="s",
                              config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
        with pytest.raises(ClientError, match="ThrottlingException"):
            client.invoke_endpoint(EndpointName="qa", Body=b'{"inputs": "hi"}')
        answer = client.invoke_endpoint(EndpointName="qa", Body=b'{"inputs": "hi"}', TargetVariant="green")
        assert answer["InvokedProductionVariant"] == "green"
        assert json.loads(answer["Body"].read()) == {"generated_text": "You said: hi"}
    path.write_text('colour = "blue"\n')
    with pytest.raises(ValueError, match="unknown settings"):
        ServerConfig.load(path)


def test_real_model_answers_the_seed_question_through_boto3(model_endpoint):
    client = runtime(model_endpoint)
    body = json.dumps({"inputs": SEED_PROMPT, "parameters": {"temperature": 1e-10, "max_new_tokens": 48}})
    answer = json.loads(client.invoke_endpoint(EndpointName="endpoint-name", Body=body)["Body"].read())
    assert "3 days" in answer[0]["generated_text"]
    streamed = client.invoke_endpoint_with_response_stream(
        EndpointName="lmi", Body=json.dumps({"inputs": SEED_PROMPT, "stream": True,
                                             "parameters": {"temperature": 1e-10, "max_new_tokens": 48}}))
    lines = [json.loads(e["PayloadPart"]["Bytes"]) for e in streamed["Body"]]
    tokens = [line["token"]["text"] for line in lines[:-1]]
    assert len(tokens) > 5  # token by token
    assert "3 days" in "".join(tokens) and lines[-1]["generated_text"] == "".join(tokens)
