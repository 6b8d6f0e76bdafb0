"""The measurements. Each returns table rows: (what, median, min–max, ratio, note).

Everything runs against one local endpoint started here, in one run, so ratios compare like with
like. Peers that are not installed are reported as such, never skipped silently.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from bench.endpoint import RemoteEndpoint
from sm_magic.batch import run_batch
from sm_magic.calls import invoke, stream
from sm_magic.handlers.registry import Registry
from sm_magic.llm import SagemakerEndpoint
from sm_magic.local import EndpointSpec
from sm_magic.local.backends import model_available
from sm_magic.session import Session

SEED = ("Peter and Elizabeth took a taxi to attend the night party in the city. While in the party, Elizabeth "
        "collapsed and was rushed to the hospital.\nSince she was diagnosed with a brain injury, the doctor told "
        "Peter to stay besides her until she gets well.\nTherefore, Peter stayed with her at the hospital for 3 days "
        "without leaving.\n\nQuestion: How long was Elizabeth hospitalized?\nAnswer:")
BLOCK = 40  # calls per contender in a row in the per-call rows (~40 ms: longer than a journal commit window)
TGI = Registry().get("tgi")
LMI = Registry().get("lmi")


@dataclass
class Row:
    section: str
    what: str
    median: str
    spread: str = ""
    ratio: str = ""
    note: str = ""


def timed(fn: Callable[[], object], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def in_blocks(contenders: dict[str, Callable[[], object]], calls: int, block: int = BLOCK) -> dict[str, list[float]]:
    """Seconds per call of each contender: ``block`` calls in a row, contenders in turn, until each made
    ``calls``; one value per block. In a row, so a contender's background work (a journal's writer
    thread) is paid in its own time, not in the next contender's; in turn, so a busy moment of the
    machine hits every contender."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        timed(fn, 0)  # warm-up
    for _ in range(max(1, calls // block)):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(block):
                fn()
            times[name].append((time.perf_counter() - start) / block)
    return times


def paired(values: list[float], base: list[float]) -> float:
    """The median of the per-round differences of two contenders' blocks: a drift of the machine during
    the run moves both blocks of a round, and cancels."""
    return statistics.median(v - b for v, b in zip(values, base, strict=True))


def ms(values: list[float]) -> tuple[str, str]:
    return f"{statistics.median(values) * 1000:.3f} ms", f"{min(values) * 1000:.3f}–{max(values) * 1000:.3f}"


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class LCHandler:
    """A LangChain content handler for TGI (the seed's, plus streamed lines)."""

    content_type = "application/json"
    accepts = "application/json"

    def transform_input(self, prompt, model_kwargs):
        return json.dumps({"inputs": prompt, "parameters": model_kwargs}).encode()

    def transform_output(self, output):
        if isinstance(output, bytes):  # langchain-aws streaming: one line
            line = output.decode().removeprefix("data:").strip()
            return json.loads(line)["token"]["text"] if line else ""
        return json.loads(output.read())[0]["generated_text"]


def peer_handler(module: str, streaming: bool = False):
    """LCHandler as an instance of the peer's own LLMContentHandler (they check the type)."""
    base = __import__(module, fromlist=["LLMContentHandler"]).LLMContentHandler

    def transform_input(self, prompt, model_kwargs):
        return json.dumps({"inputs": prompt, "parameters": model_kwargs, "stream": streaming}).encode()

    return type("PeerHandler", (LCHandler, base), {"transform_input": transform_input})()


AWS = "langchain_aws.llms.sagemaker_endpoint"
COMMUNITY = "langchain_community.llms.sagemaker_endpoint"


def specs() -> list[EndpointSpec]:
    """Every endpoint the bench uses (deterministic backend: zero-cost rows), plus the real models when installed."""
    out = [
        EndpointSpec("fast", "tgi", "deterministic"),
        EndpointSpec("fast-lmi", "lmi", "deterministic", fill_to_max_tokens=True),
        EndpointSpec("fast-short", "tgi", "deterministic", fill_to_max_tokens=True),  # answers max_new_tokens long
        EndpointSpec("paced", "lmi", "deterministic", fill_to_max_tokens=True, token_delay=0.001),
        EndpointSpec("paced-tgi", "tgi", "deterministic", fill_to_max_tokens=True, token_delay=0.001),
        EndpointSpec("latency-50ms", "tgi", "deterministic", latency=0.05),
        EndpointSpec("latency-20ms", "tgi", "deterministic", latency=0.02),
        EndpointSpec("burst", "tgi", "deterministic", latency=0.02),
        EndpointSpec("capped", "tgi", "deterministic", latency=0.02, max_concurrency=8),
        EndpointSpec("embed", "tei-embedding", "auto"),
    ]
    if model_available():
        out.append(EndpointSpec("model", "lmi", "model"))
    return out


def servers(quick: bool = False, pin: bool = True) -> RemoteEndpoint:
    """The local endpoint in its own process (``sm-magic serve``), pinned to its own core where possible."""
    return RemoteEndpoint(specs(), pin=pin)


def client(server: RemoteEndpoint | str, pool: int = 32):
    """A boto3 sagemaker-runtime client on the endpoint (``server`` or its URL), standard retries."""
    url = server if isinstance(server, str) else server.url
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="k", aws_secret_access_key="s",
                        config=Config(max_pool_connections=pool, retries={"mode": "standard"}))


# -- 1. per-call latency ---------------------------------------------------------------------------------
def per_call(server: RemoteEndpoint, repeat: int) -> list[Row]:
    raw = client(server)
    body = json.dumps({"inputs": "hi", "parameters": {}}).encode()
    session = Session(client=raw)
    contenders: dict[str, Callable[[], object]] = {
        "raw boto3 invoke_endpoint": lambda: raw.invoke_endpoint(EndpointName="fast", Body=body,  # the seed's headers
                                                                 ContentType="application/json",
                                                                 Accept="application/json")["Body"].read(),
        "sm_magic invoke()": lambda: invoke(session, "fast", "hi", TGI),
    }
    llm = SagemakerEndpoint(endpoint_name="fast", client=raw, content_handler="tgi")
    contenders["sm_magic SagemakerEndpoint.invoke"] = lambda: llm.invoke("hi")
    shell = _shell(server, raw)
    contenders["%%sagemaker (IPython shell)"] = lambda: shell.run_cell_magic("sagemaker", "fast --handler tgi", "hi")
    if has("langchain_aws"):
        from langchain_aws.llms.sagemaker_endpoint import SagemakerEndpoint as AwsEndpoint

        aws = AwsEndpoint(endpoint_name="fast", client=raw, content_handler=peer_handler(AWS))
        contenders["langchain-aws SagemakerEndpoint.invoke"] = lambda: aws.invoke("hi")
    if has("langchain_community"):
        from langchain_community.llms import SagemakerEndpoint as CommunityEndpoint

        community = CommunityEndpoint(endpoint_name="fast", client=raw, content_handler=peer_handler(COMMUNITY))
        contenders["langchain_community SagemakerEndpoint.invoke"] = lambda: community.invoke("hi")
    results = in_blocks(contenders, repeat)
    raw_times = results["raw boto3 invoke_endpoint"]
    base = statistics.median(raw_times)
    rows = []
    for name, values in results.items():
        median, spread = ms(values)
        overhead = paired(values, raw_times)
        rows.append(Row("per call", name, median, spread, f"{1 + overhead / base:.3f}×",
                        f"{overhead * 1e6:+.0f} µs" if name != "raw boto3 invoke_endpoint" else "baseline"))
    for peer in ("langchain-aws", "langchain_community"):
        if not any(peer in r.what for r in rows):
            rows.append(Row("per call", f"{peer} SagemakerEndpoint.invoke", "not installed"))
    return rows


def jupyter_ai(server: RemoteEndpoint, repeat: int, venv: Path) -> list[Row]:
    """%%ai sagemaker-endpoint and %load_ext jupyter_ai_magics, in jupyter-ai's own environment."""
    python = venv / "bin" / "python"
    if not (venv / ".stamp").exists():
        return [Row("per call", "jupyter-ai %%ai sagemaker-endpoint", "not installed")]
    script = Path(__file__).with_name("jupyter_ai.py")
    out = subprocess.run([str(python), str(script), server.url, str(repeat)], capture_output=True, text=True)
    if out.returncode != 0:
        return [Row("per call", "jupyter-ai %%ai sagemaker-endpoint", "failed", note=out.stderr.strip()[-100:])]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    base = statistics.median(data["raw"])
    ai = statistics.median(data["ai"])
    extra = (statistics.median(data["loaded"]) - statistics.median(data["bare"])) * 1000
    return [
        Row("per call", "jupyter-ai %%ai sagemaker-endpoint", *ms(data["ai"]), f"{ai / base:.1f}×",
            f"{(ai - base) * 1e6:+.0f} µs over raw boto3 in its own env (langchain-core 0.3)"),
        Row("%load_ext", "%load_ext jupyter_ai_magics (its own env)", *ms(data["loaded"]),
            note=f"+{extra:.0f} ms over bare IPython there"),
    ]


def _shell(server: RemoteEndpoint, client: object = None):
    """The IPython shell with sm_magic on the local endpoint (through ``client`` when given)."""
    from IPython.core.interactiveshell import InteractiveShell

    os.environ["SM_MAGIC_LOCAL_URL"] = server.url
    os.environ.setdefault("SM_MAGIC_ENDPOINTS", os.devnull)
    shell = InteractiveShell.instance()
    if "sm_magic" not in shell.extension_manager.loaded:
        shell.run_line_magic("load_ext", "sm_magic")
    if client is not None:
        shell.user_ns["bench_client"] = client
        shell.run_line_magic("sagemaker", "session --client bench_client")
    else:
        shell.run_line_magic("sagemaker", f"session --local {server.url}")
    return shell


# -- 3. batch --------------------------------------------------------------------------------------------------
def batch(server: RemoteEndpoint, n: int, concurrency: int) -> list[Row]:
    raw = client(server, pool=max(32, concurrency))
    session = Session(client=raw)
    prompts = [f"item {i}" for i in range(n)]
    ideal = n / concurrency * 0.05
    rows = [Row("batch", f"ideal: {n} prompts × 50 ms / {concurrency}", f"{ideal * 1000:.0f} ms", ratio="1.00×")]

    run_batch(lambda p: invoke(session, "latency-50ms", p, TGI), prompts[:concurrency], concurrency,
              progress=False)  # warm-up: open the pool's connections, as every other row does

    def measure(name: str, fn: Callable[[], object]) -> None:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        rows.append(Row("batch", name, f"{took * 1000:.0f} ms", ratio=f"{took / ideal:.2f}×"))

    measure("sm_magic run_batch", lambda: run_batch(lambda p: invoke(session, "latency-50ms", p, TGI), prompts,
                                                   concurrency, progress=False))
    if has("langchain_aws"):
        from langchain_aws.llms.sagemaker_endpoint import SagemakerEndpoint as AwsEndpoint

        aws = AwsEndpoint(endpoint_name="latency-50ms", client=raw, content_handler=peer_handler(AWS))
        measure("langchain-aws .batch(max_concurrency)",
                lambda: aws.batch(prompts, config={"max_concurrency": concurrency}))
    else:
        rows.append(Row("batch", "langchain-aws .batch(max_concurrency)", "not installed"))
    llm = SagemakerEndpoint(endpoint_name="latency-50ms", client=raw, content_handler="tgi")
    measure("sm_magic SagemakerEndpoint.batch(max_concurrency)",
            lambda: llm.batch(prompts, config={"max_concurrency": concurrency}))
    measure("sequential loop", lambda: [invoke(session, "latency-50ms", p, TGI) for p in prompts])
    return rows


# -- 4. streaming ------------------------------------------------------------------------------------------------
def streaming(server: RemoteEndpoint, tokens: int) -> list[Row]:
    """Paced at 1 ms/token: total and first-token time (client CPU per part: :func:`bench.scale.streaming`)."""
    raw = client(server)
    session = Session(client=raw)
    body = json.dumps({"inputs": "go", "parameters": {"max_new_tokens": tokens}, "stream": True}).encode()
    rows = []

    def raw_iter() -> tuple[float, float]:
        start = time.perf_counter()
        first = None
        response = raw.invoke_endpoint_with_response_stream(EndpointName="paced", Body=body)
        for event in response["Body"]:
            if first is None and "PayloadPart" in event:
                first = time.perf_counter() - start
        return first or 0.0, time.perf_counter() - start

    def ours() -> tuple[float, float]:
        s = stream(session, "paced", "go", LMI, {"max_new_tokens": tokens})
        for _ in s:
            pass
        return s.result.first_token or 0.0, s.result.latency

    shell = _shell(server)

    def magic() -> tuple[float, float]:
        from IPython.utils.capture import capture_output

        with capture_output():
            shell.run_cell_magic("sagemaker", f"paced --stream --handler lmi --max-new-tokens {tokens} --out s", "go")
        result = shell.user_ns["s"]
        return result.first_token or 0.0, result.latency

    contenders = {"raw boto3 event stream": raw_iter, "sm_magic stream()": ours, "%%sagemaker --stream": magic}
    if has("langchain_aws"):
        from langchain_aws.llms.sagemaker_endpoint import SagemakerEndpoint as AwsEndpoint

        # TGI's SSE lines end in a newline; langchain-aws waits forever for LMI's unterminated last line.
        aws = AwsEndpoint(endpoint_name="paced-tgi", client=raw, content_handler=peer_handler(AWS, streaming=True),
                          streaming=True, model_kwargs={"max_new_tokens": tokens})

        def lc() -> tuple[float, float]:
            start = time.perf_counter()
            first = None
            for _ in aws.stream("go"):
                first = first or time.perf_counter() - start
            return first or 0.0, time.perf_counter() - start

        contenders["langchain-aws .stream() (same tokens as TGI SSE)"] = lc
    for name, fn in contenders.items():
        fn()
        runs = [fn() for _ in range(3)]
        first = statistics.median(r[0] for r in runs)
        total = statistics.median(r[1] for r in runs)
        rows.append(Row("streaming", f"{name}: {tokens} tokens at 1 ms/token", f"{total * 1000:.0f} ms total",
                        note=f"first token {first * 1000:.1f} ms"))
    return rows


# -- 5. document QA -------------------------------------------------------------------------------------------------
def document_qa(server: RemoteEndpoint, n: int) -> list[Row]:
    from sm_magic.qa import DEFAULT_TEMPLATE, answer, estimate_tokens, load_documents, make_plan

    session = Session(client=client(server))
    docs = [f"Memo {i}. The committee discussed the budget and the parking rota. " * 4 for i in range(n)]
    docs[n // 2] = "Memo. The archive moved to the north wing after the flood."
    plan = make_plan("Where did the archive move?", load_documents(docs), DEFAULT_TEMPLATE, "map-reduce", 512, 64)
    sent = sum(estimate_tokens(p) for p in plan.prompts)
    rows = []
    def ask(prompt: str):
        return invoke(session, "latency-50ms", prompt, TGI, {"max_new_tokens": 64})

    for concurrency in (16, 1):
        def many(prompts, c=concurrency):
            return run_batch(ask, prompts, c, progress=False).outcomes

        start = time.perf_counter()
        answer("Where did the archive move?", docs, ask, many, mode="map-reduce", context_tokens=512,
               max_new_tokens=64)
        took = time.perf_counter() - start
        what = f"map-reduce, {n} docs, {len(plan.prompts)} map calls, concurrency {concurrency}"
        rows.append(Row("document QA", what, f"{took * 1000:.0f} ms", note=f"~{sent} tokens sent in the map step"))
    return rows


# -- 6. the local endpoint itself --------------------------------------------------------------------------------------
def local_endpoint(server: RemoteEndpoint, repeat: int) -> list[Row]:
    raw = client(server)
    body = json.dumps({"inputs": "hi", "parameters": {}}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    connection.connect()
    with contextlib.suppress(OSError):
        import socket

        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post() -> bytes:
        connection.request("POST", "/endpoints/fast/invocations", body, {"Content-Type": "application/json"})
        return connection.getresponse().read()

    http_times = timed(post, repeat)
    boto_times = timed(lambda: raw.invoke_endpoint(EndpointName="fast", Body=body)["Body"].read(), repeat)
    rows = [Row("local endpoint", "raw HTTP POST", *ms(http_times), note="server cost alone"),
            Row("local endpoint", "boto3 invoke_endpoint", *ms(boto_times),
                ratio=f"{statistics.median(boto_times) / statistics.median(http_times):.1f}×",
                note="boto3's own cost on top (signing, parsing)")]
    if not model_available():
        rows.append(Row("local endpoint", "real model tokens/s", "model not installed"))
        return rows
    from sm_magic.local.backends import make_backend
    from sm_magic.local.containers import Generation

    model = make_backend("model")
    gen = Generation(prompt=SEED, max_new_tokens=128, temperature=0.0, stop=[])
    gen_body = json.dumps({"inputs": SEED, "parameters": {"max_new_tokens": 128}, "stream": True}).encode()

    def direct() -> float:
        start = time.perf_counter()
        count = sum(1 for _ in model.generate(gen))
        return count / (time.perf_counter() - start)

    def through() -> float:
        start = time.perf_counter()
        count = 0
        for event in raw.invoke_endpoint_with_response_stream(EndpointName="model", Body=gen_body)["Body"]:
            count += event["PayloadPart"]["Bytes"].count(b'"token"') if "PayloadPart" in event else 0
        return (count - 1) / (time.perf_counter() - start)

    direct(), through()
    d = statistics.median(direct() for _ in range(3))
    t = statistics.median(through() for _ in range(3))
    rows.append(Row("local endpoint", "SmolLM2 via llama-cpp-python directly", f"{d:.0f} tokens/s"))
    rows.append(Row("local endpoint", "SmolLM2 through the endpoint (boto3 stream)", f"{t:.0f} tokens/s",
                    ratio=f"{t / d:.2f}×", note="goal ≥ 0.9×"))
    return rows


# -- 7. memory -------------------------------------------------------------------------------------------------------
MEMORY_SCRIPT = """
import sys, json
from sm_magic.session import Session
from sm_magic.calls import invoke, stream
from sm_magic.batch import run_batch
from sm_magic.handlers.registry import Registry
session = Session.local(sys.argv[2])
def peak():  # this process's own high-water mark, in KiB (ru_maxrss would count the forked parent's pages)
    return int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
before = peak()
if sys.argv[1] == "stream":
    for _ in stream(session, "fast-lmi", "go", Registry().get("lmi"), {"max_new_tokens": 10000}):
        pass
else:
    run_batch(lambda p: invoke(session, "fast-lmi", p, Registry().get("lmi"), {"max_new_tokens": 20}),
              [str(i) for i in range(200)], 16, progress=False)
after = peak()
print(json.dumps([before, after]))
"""


def memory(server: RemoteEndpoint) -> list[Row]:
    rows = []
    for case, label in (("stream", "streaming 10,000 tokens"), ("batch", "200-prompt batch, concurrency 16")):
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, case, server.url], capture_output=True,
                             text=True, check=True)
        before, after = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(Row("memory", f"peak RSS, {label}", f"{after / 1024:.0f} MB",
                        note=f"+{(after - before) / 1024:.1f} MB over the process before the run"))
    return rows
