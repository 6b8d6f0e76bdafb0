"""Endpoint capacity (calls in flight, calls per second) answered as ThrottlingException, and request stats."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sm_magic.local import EndpointSpec, Fault, LocalEndpoint, ServerConfig

BODY = b'{"inputs": "hi"}'


def runtime(url: str, attempts: int = 1):
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="k", aws_secret_access_key="s",
                        config=Config(retries={"mode": "standard", "total_max_attempts": attempts},
                                      max_pool_connections=8))


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_local/stats", timeout=10) as answer:
        return json.loads(answer.read())


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def limited():
    specs = [EndpointSpec("two", "tgi", "deterministic", max_concurrency=2),
             EndpointSpec("slow-rate", "lmi", "deterministic", max_rps=0.2)]
    with LocalEndpoint(ServerConfig(endpoints=specs)) as server:
        yield server


def test_calls_beyond_max_concurrency_are_throttled_until_one_finishes(limited):
    client = runtime(limited.url)
    limited.inject("two", Fault("latency", times=2, seconds=1.0))
    answers = []
    held = [threading.Thread(target=lambda: answers.append(client.invoke_endpoint(EndpointName="two", Body=BODY)))
            for _ in range(2)]
    for thread in held:
        thread.start()
    wait_for(lambda: stats(limited.url)["endpoints"]["two"]["in_flight"] == 2)
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="two", Body=BODY)
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    for thread in held:
        thread.join()
    assert len(answers) == 2
    client.invoke_endpoint(EndpointName="two", Body=BODY)  # capacity is free again
    wait_for(lambda: stats(limited.url)["endpoints"]["two"]["in_flight"] == 0)  # counted down after the answer
    counts = stats(limited.url)["endpoints"]["two"]
    assert counts["calls"] == 4 and counts["errors"] == {"ThrottlingException": 1} and counts["in_flight"] == 0


def test_calls_beyond_max_rps_are_throttled_and_botocore_retries_them(limited):
    runtime(limited.url).invoke_endpoint(EndpointName="slow-rate", Body=BODY)
    with pytest.raises(ClientError, match="ThrottlingException"):
        runtime(limited.url).invoke_endpoint(EndpointName="slow-rate", Body=BODY)
    with pytest.raises(ClientError, match="ThrottlingException"):  # standard retries treat it as throttling
        runtime(limited.url, attempts=2).invoke_endpoint(EndpointName="slow-rate", Body=BODY)
    assert stats(limited.url)["endpoints"]["slow-rate"]["errors"] == {"ThrottlingException": 3}


def test_stats_count_each_operation_per_endpoint_and_overall(limited):
    client = runtime(limited.url)
    client.invoke_endpoint(EndpointName="two", Body=BODY)
    list(client.invoke_endpoint_with_response_stream(EndpointName="two", Body=BODY)["Body"])
    sm = boto3.client("sagemaker", endpoint_url=limited.url, region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")
    sm.describe_endpoint(EndpointName="two")
    with pytest.raises(ClientError):
        client.invoke_endpoint(EndpointName="two", Body=b'{"inputs": 1}')
    seen = stats(limited.url)
    assert seen["endpoints"]["two"]["operations"] == {"InvokeEndpoint": 2, "InvokeEndpointWithResponseStream": 1}
    assert seen["endpoints"]["two"]["errors"] == {"ModelError": 1}
    assert seen["endpoints"]["slow-rate"]["calls"] == 0
    assert seen["operations"] == {"InvokeEndpoint": 2, "InvokeEndpointWithResponseStream": 1, "DescribeEndpoint": 1}
    assert limited.calls["two"] == 3


def test_endpoint_options_parse_from_the_command_line_and_config_file(tmp_path):
    spec = EndpointSpec.parse("big=lmi:concurrency=8:rps=2.5")
    assert (spec.name, spec.format, spec.max_concurrency, spec.max_rps) == ("big", "lmi", 8, 2.5)
    with pytest.raises(ValueError, match="options are concurrency=N, rps=R"):
        EndpointSpec.parse("big=lmi:speed=9")
    with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
        EndpointSpec.parse("big=lmi:concurrency=-1")
    path = tmp_path / "local.toml"
    path.write_text('[[endpoints]]\nname = "qa"\nformat = "lmi"\nmax_concurrency = 4\nmax_rps = 10\n')
    loaded = ServerConfig.load(path).endpoints[0]
    assert (loaded.max_concurrency, loaded.max_rps) == (4, 10)


def test_serve_flags_set_capacity_and_stats_are_readable_from_another_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "sm_magic.cli", "serve", "--port", str(port), "--backend", "deterministic",
         "--endpoint", "a=tgi:rps=0.1", "--endpoint", "b=tgi", "--max-concurrency", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert "Local SageMaker endpoint" in process.stdout.readline()
        client = runtime(url)
        client.invoke_endpoint(EndpointName="a", Body=BODY)
        with pytest.raises(ClientError, match="ThrottlingException"):
            client.invoke_endpoint(EndpointName="a", Body=BODY)
        client.invoke_endpoint(EndpointName="b", Body=BODY)
        seen = stats(url)
        assert seen["endpoints"]["a"] == {"calls": 2, "operations": {"InvokeEndpoint": 2}, "in_flight": 0,
                                          "max_concurrency": 3, "max_rps": 0.1,
                                          "errors": {"ThrottlingException": 1}, "async": {}}
        assert (seen["endpoints"]["b"]["max_concurrency"], seen["endpoints"]["b"]["max_rps"]) == (3, 0)
        assert seen["operations"]["InvokeEndpoint"] == 3
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
