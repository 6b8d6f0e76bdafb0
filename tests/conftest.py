"""Fixtures: a running local endpoint (deterministic and real-model), sessions, an IPython shell, moto STS."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import pytest

from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.local.backends import INSTALL_HINT, model_available
from sm_magic.session import Session

SEED_CONTEXT = """
Peter and Elizabeth took a taxi to attend the night party in the city. While in the party, Elizabeth collapsed and was rushed to the hospital.
Since she was diagnosed with a brain injury, the doctor told Peter to stay besides her until she gets well.
Therefore, Peter stayed with her at the hospital for 3 days without leaving.
"""
SEED_QUESTION = "How long was Elizabeth hospitalized?"
SEED_PROMPT = f"""Use the following pieces of context to answer the question at the end.

{SEED_CONTEXT}

Question: {SEED_QUESTION}
Answer:"""

# Obviously fake keys: secret-hygiene tests look for these exact strings in every output.
FAKE_KEY_ID = "ASIAFAKEKEYID0000042"
FAKE_SECRET = "fake-secret-never-print-me-0042"
FAKE_TOKEN = "fake-session-token-never-print-me-0042"

FORMATS = ["tgi", "tgi-messages", "lmi", "lmi-chat", "llama2-chat", "flan-t5", "embedding"]


def endpoint_specs() -> list[EndpointSpec]:
    specs = [EndpointSpec(f, f, "deterministic") for f in FORMATS]
    specs += [
        EndpointSpec("endpoint-name", "tgi", "deterministic"),
        EndpointSpec("sliced", "tgi", "deterministic", part_size=3),  # PayloadParts cut anywhere
        EndpointSpec("faulty", "tgi", "deterministic"),
        EndpointSpec("faulty-lmi", "lmi", "deterministic"),
        EndpointSpec("multi", "tgi", "deterministic", variants=["blue", "green"]),
        EndpointSpec("components", "tgi-messages", "deterministic", inference_components=["ic-small"]),
        EndpointSpec("slow", "tgi", "deterministic", latency=0.05),
        EndpointSpec("long", "lmi", "deterministic", fill_to_max_tokens=True),
        EndpointSpec("trickle", "lmi", "deterministic", fill_to_max_tokens=True, token_delay=0.01),
        EndpointSpec("tei-embedding", "tei-embedding", "deterministic"),  # hashing vectors
    ]
    return specs


@pytest.fixture(scope="session")
def local() -> Iterator[LocalEndpoint]:
    """One local endpoint for the whole run (deterministic backend)."""
    with LocalEndpoint(ServerConfig(endpoints=endpoint_specs())) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "local" in request.fixturenames:
        request.getfixturevalue("local").clear_faults()


@contextlib.contextmanager
def watch_in_flight(server: LocalEndpoint, endpoint: str, hold: float = 0.01) -> Iterator[list[int]]:
    """``with watch_in_flight(server, "endpoint") as peak:`` → peak[0] is the most calls served at once
    (each call is held ``hold`` seconds so overlaps show)."""
    backend = server._endpoints[endpoint].backend
    original, current, peak, lock = backend.generate, [0], [0], threading.Lock()

    def counting(gen):
        with lock:
            current[0] += 1
            peak[0] = max(peak[0], current[0])
        try:
            time.sleep(hold)
            yield from original(gen)
        finally:
            with lock:
                current[0] -= 1

    backend.generate = counting
    try:
        yield peak
    finally:
        backend.generate = original


@pytest.fixture
def in_flight(local: LocalEndpoint):
    """``with in_flight("endpoint") as peak:`` on the suite's local endpoint."""
    return lambda endpoint: watch_in_flight(local, endpoint)


@pytest.fixture
def session(local: LocalEndpoint) -> Session:
    return Session.local(local.url)


@pytest.fixture(scope="session")
def model_endpoint() -> Iterator[LocalEndpoint]:
    """The real SmolLM2 model behind the local endpoint; fails (never skips) when not installed."""
    if not model_available():
        pytest.fail(INSTALL_HINT)
    specs = [EndpointSpec("endpoint-name", "tgi", "model"), EndpointSpec("lmi", "lmi", "model"),
             EndpointSpec("chat", "tgi-messages", "model")]
    with LocalEndpoint(ServerConfig(endpoints=specs)) as server:
        yield server


@pytest.fixture
def aws_env(local: LocalEndpoint, tmp_path, monkeypatch: pytest.MonkeyPatch) -> LocalEndpoint:
    """Plain boto3 (no sm_magic settings) pointed at the local endpoint by environment, as a user would."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in local.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return local


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server for STS (and the SageMaker control plane), on loopback."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def ip(local: LocalEndpoint, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The in-process IPython shell with sm_magic loaded fresh, on the local endpoint."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import start_ipython

    monkeypatch.setenv("SM_MAGIC_ENDPOINTS", str(tmp_path / "endpoints.ini"))
    monkeypatch.setenv("SM_MAGIC_LOCAL_URL", local.url)
    start_ipython()  # once per process; later calls return None
    shell = InteractiveShell.instance()
    shell.display_formatter.active_types = list(shell.display_formatter.format_types)
    from sm_magic.magics import SageMakerMagics

    magics = SageMakerMagics(shell=shell)
    shell.register_magics(magics)
    shell.user_ns["_sm_magics"] = magics
    yield shell
    shell.config.pop("SageMaker", None)  # %config SageMaker.x set by a test stays with that test
    shell.configurables[:] = [c for c in shell.configurables if type(c).__name__ != "SageMaker"]
    keep = ("In", "Out", "exit", "quit", "get_ipython")
    for name in [n for n in shell.user_ns if not n.startswith("_") and n not in keep]:
        shell.user_ns.pop(name, None)


@pytest.fixture(autouse=True)
def sm_magic_home(tmp_path_factory, monkeypatch: pytest.MonkeyPatch):
    """Each test's journal and aliases live in a folder of its own, never in ~/.sm_magic."""
    home = tmp_path_factory.mktemp("sm_magic_home")
    monkeypatch.setenv("SM_MAGIC_HOME", str(home))
    return home


def cell(ip, line: str, body: str = "hi"):
    """Run ``%%sagemaker line`` with ``body``: its value and what it printed."""
    from IPython.utils.capture import capture_output

    ip.events.trigger("pre_execute")  # as a cell run does (the aliases file is looked at once per cell)
    with capture_output() as captured:
        value = ip.run_cell_magic("sagemaker", line, body)
    return value, captured


def line(ip, text: str):
    """Run ``%sagemaker text``: its value and what it printed."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        value = ip.run_line_magic("sagemaker", text)
    return value, captured


def runner(ip):
    return ip.user_ns["_sm_magics"].runner
