"""Asynchronous inference end to end: %%sagemaker --async, batches, failures, resume after kill -9.

The local endpoint serves async endpoints and moto's server is the S3 both sides use.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from sm_magic.async_ import AsyncFailed, AsyncSettings, AsyncTimeout, RequestExpired, S3AccessDenied
from sm_magic.async_run import AsyncRun
from sm_magic.local import EndpointSpec, Fault, LocalEndpoint, ServerConfig
from sm_magic.local.backends import INSTALL_HINT, model_available
from sm_magic.session import Session, SessionSettings
from tests.conftest import SEED_PROMPT
from tests.test_durable import Kernel

INPUTS = "async-requests"


def specs(backend: str = "deterministic") -> list[EndpointSpec]:
    return [EndpointSpec("queued", "tgi", backend, async_=True),
            EndpointSpec("queued-lmi", "lmi", backend, async_=True, s3_output_path="s3://team-results/out",
                         s3_failure_path="s3://team-results/errors"),
            EndpointSpec("realtime", "tgi", backend)]


@pytest.fixture(scope="module")
def server(moto_server: str) -> Iterator[LocalEndpoint]:
    with LocalEndpoint(ServerConfig(endpoints=specs(), s3_endpoint_url=moto_server)) as server:
        yield server


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch):
    """boto3's S3 on moto; sm_magic finds it the standard way (AWS_ENDPOINT_URL_S3)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s", config=Config(s3={"addressing_style": "path"}))
    client.create_bucket(Bucket=INPUTS)
    return client


@pytest.fixture
def aip(ip, server: LocalEndpoint, s3):
    """The in-process shell, its session on the async-serving local endpoint."""
    ip.run_line_magic("sagemaker", f"session --local {server.url}")
    yield ip
    server.clear_faults()


def operations(server: LocalEndpoint, endpoint: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{server.url}/_local/stats") as answer:
        return json.loads(answer.read())["endpoints"].get(endpoint, {}).get("operations", {})


def submitted(server: LocalEndpoint, endpoint: str) -> int:
    return operations(server, endpoint).get("InvokeEndpointAsync", 0)


def keys(s3, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_async_cell_answers_the_seeds_question_through_s3(aip, server, s3):
    before = submitted(server, "queued")
    aip.run_cell_magic("sagemaker", "queued --async --handler tgi -o answer", SEED_PROMPT)
    answer = aip.user_ns["answer"]
    assert "3 days" in answer.text and answer.endpoint == "queued"
    assert submitted(server, "queued") == before + 1
    assert operations(server, "queued").get("InvokeEndpoint", 0) == 0  # never a real-time call
    uploaded = keys(s3, "sm-magic-local", "sm-magic/async-inputs/queued/")  # the output path's bucket
    assert any(json.loads(s3.get_object(Bucket="sm-magic-local", Key=k)["Body"].read())["inputs"] == SEED_PROMPT
               for k in uploaded)


def test_async_endpoints_take_the_async_path_without_the_flag_and_are_listed(aip, server, s3):
    aip.run_cell_magic("sagemaker", "queued-lmi --s3-input s3://async-requests/mine -o answer", "Say hi")
    assert aip.user_ns["answer"].text == "You said: Say hi"
    assert keys(s3, INPUTS, "mine/")  # the request went where --s3-input said
    assert keys(s3, "team-results", "out/")  # the answer where the endpoint's config said
    rows = {row["name"]: row for row in aip.run_line_magic("sagemaker", "endpoints").rows}
    assert rows["queued"]["async"] == "yes" and rows["realtime"]["async"] == ""
    described = {r["field"]: r["value"] for r in aip.run_line_magic("sagemaker", "endpoints describe queued-lmi").rows}
    assert described["async output"] == "s3://team-results/out (failures: s3://team-results/errors)"


def test_a_batch_of_200_async_prompts_is_a_journaled_job(aip, server, s3):
    aip.user_ns["questions"] = [f"question {i}" for i in range(200)]
    before = submitted(server, "queued")
    aip.run_cell_magic("sagemaker", "queued --handler tgi --batch questions --async --concurrency 16 -o answers",
                       "Q: {text}")
    batch = aip.user_ns["answers"]
    assert batch.texts == [f"You said: Q: question {i}" for i in range(200)]
    assert submitted(server, "queued") == before + 200
    runner = aip.user_ns["_sm_magics"].runner
    job = runner.journal.job(batch.job_id)
    assert job.kind == "async" and job.done == 200 and job.status == "ok"
    places = runner.journal.submissions(batch.job_id)
    assert sorted(places) == list(range(200))
    assert all(p.output_location.endswith(f"{p.inference_id}.out") for p in places.values())


def test_a_failure_object_is_a_clear_error(aip, server):
    server.inject("queued", Fault("model-error", status=500, message="CUDA out of memory"))
    with pytest.raises(AsyncFailed) as info:
        aip.run_cell_magic("sagemaker", "queued --async --handler tgi", "hello")
    text = info.value.explain()
    assert "CUDA out of memory" in text and "wrote a failure" in text
    assert "s3://sm-magic-local/async-endpoint-failures/queued/" in text
    assert info.value.content.startswith("Received server error (500)")


def test_an_answer_that_does_not_arrive_in_max_wait_is_collected_later_by_resume(aip, server):
    server.inject("queued", Fault("latency", seconds=2.5))
    runner = aip.user_ns["_sm_magics"].runner
    before = submitted(server, "queued")
    with pytest.raises(AsyncTimeout, match="within 1 s") as info:
        aip.run_cell_magic("sagemaker", "queued --async --handler tgi --max-wait 1", "slow one")
    assert "%sagemaker resume JOB" in info.value.explain()
    job = runner.journal.jobs(1)[0]
    resumed = aip.run_line_magic("sagemaker", f"resume {job.id}")
    assert resumed.texts == ["You said: slow one"]
    assert submitted(server, "queued") == before + 1  # collected, not sent again


def test_an_expired_request_says_to_raise_the_ttl(moto_server, s3):
    one = EndpointSpec("one-worker", "tgi", "deterministic", async_=True)
    with LocalEndpoint(ServerConfig(endpoints=[one], s3_endpoint_url=moto_server, async_workers=1)) as server:
        server.inject("one-worker", Fault("latency", seconds=3))  # the only worker is busy for 3 s
        # botocore refuses a TTL under AWS's 60 s; the local endpoint takes 1 s so that expiry happens for real
        session = Session.local(server.url, botocore_config=Config(parameter_validation=False))
        from sm_magic.handlers.presets import PRESETS

        run = AsyncRun(session, AsyncSettings(s3_input=f"s3://{INPUTS}/ttl", request_ttl=1))
        calls = [run.submit(i, "one-worker", f"call {i}", PRESETS["tgi"](), {}) for i in range(2)]
        errors = [call.exception(timeout=30) for call in calls]
        run.close()
    ran = [call.result().text for call, error in zip(calls, errors, strict=True) if error is None]
    expired = [error for error in errors if error is not None]
    assert len(ran) == 1 and ran[0].startswith("You said: call")  # the one the worker took first
    assert len(expired) == 1 and isinstance(expired[0], RequestExpired)  # the one that waited 3 s
    assert "RequestTTLSeconds (1 s)" in expired[0].explain() and "raise --request-ttl" in expired[0].explain()


def test_missing_s3_permission_names_the_bucket_and_the_action(server, moto_server, s3):
    iam = boto3.client("iam", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="k",
                       aws_secret_access_key="s")
    iam.create_user(UserName="reader")
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    session = Session(SessionSettings(region="us-east-1", endpoint_url=server.url, control_endpoint_url=server.url,
                                      access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"]))
    from sm_magic.async_run import submit

    def checks_iam(after: bytes) -> None:  # moto checks signatures and IAM policies after this many requests
        request = urllib.request.Request(f"{moto_server}/moto-api/reset-auth", data=after, method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request).read()

    checks_iam(b"0")
    try:
        error = submit("queued", "hello", session=session, handler="tgi",
                       s3_input=f"s3://{INPUTS}/denied").exception(timeout=30)
    finally:
        checks_iam(b"inf")
    assert isinstance(error, S3AccessDenied)
    assert f"S3 denied s3:PutObject on bucket '{INPUTS}'" in error.explain()
    assert f"arn:aws:s3:::{INPUTS}/*" in error.explain()
    assert key["SecretAccessKey"] not in error.explain()


def test_the_python_api_returns_futures(server, s3):
    import sm_magic

    session = Session.local(server.url)
    calls = [sm_magic.submit("queued", f"item {i}", session=session, handler="tgi") for i in range(5)]
    assert [c.result(timeout=30).text for c in calls] == [f"You said: item {i}" for i in range(5)]


def test_sagemaker_endpoint_uses_the_async_path_for_an_async_endpoint(server, s3):
    from sm_magic.llm import SagemakerEndpoint

    llm = SagemakerEndpoint(endpoint_name="queued", session=Session.local(server.url), content_handler="tgi")
    assert llm.invoke("hello from langchain") == "You said: hello from langchain"
    assert SagemakerEndpoint(endpoint_name="realtime", session=Session.local(server.url)).invoke("hi") == \
        "You said: hi"


def _submissions(home, job_id: int) -> int:
    path = home / "journal.sqlite3"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT count(*) FROM submissions WHERE job_id = ?", (job_id,)).fetchone()[0]
        except sqlite3.OperationalError:  # the tables are not made yet
            return 0


def test_a_kernel_killed_after_submitting_is_collected_by_resume_in_a_new_kernel(moto_server, s3, sm_magic_home):
    slow = EndpointSpec("overnight", "tgi", "deterministic", async_=True, latency=0.3)
    config = ServerConfig(endpoints=[slow], s3_endpoint_url=moto_server, async_workers=2)
    items = 20
    with LocalEndpoint(config) as server:
        first = Kernel(sm_magic_home, server.url)
        first.run(f"questions = [f'question {{i}}' for i in range({items})]")
        first.execute_async("%%sagemaker overnight --handler tgi --batch questions --async -o answers\nQ: {text}")
        deadline = time.monotonic() + 60
        while _submissions(sm_magic_home, 1) < items:  # every request is queued and journaled: kill -9
            assert time.monotonic() < deadline, "the batch was never submitted"
            time.sleep(0.02)
        first.kill()
        assert submitted(server, "overnight") == items

        second = Kernel(sm_magic_home, server.url)
        try:
            second.run("%sagemaker resume 1 answers")
            summary = second.run("print(answers.summary()); print(answers.texts == "
                                 f"[f'You said: Q: question {{i}}' for i in range({items})])")
        finally:
            second.stop()
        assert submitted(server, "overnight") == items  # no second InvokeEndpointAsync
    assert summary.strip().endswith("True") and f"{items}/{items} ok" in summary


@pytest.mark.model
def test_the_real_model_answers_the_seeds_question_asynchronously(ip, moto_server, s3):
    if not model_available():
        pytest.fail(INSTALL_HINT)
    endpoint = EndpointSpec("endpoint-name", "tgi", "model", async_=True)
    with LocalEndpoint(ServerConfig(endpoints=[endpoint], s3_endpoint_url=moto_server)) as server:
        ip.run_line_magic("sagemaker", f"session --local {server.url}")
        ip.run_cell_magic("sagemaker", "endpoint-name --async -o answer", SEED_PROMPT)
    assert "3 days" in ip.user_ns["answer"].text
