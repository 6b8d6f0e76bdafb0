"""Every notebook, executed top to bottom in a real kernel (nbclient) against a local endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sm_magic.cli import answers, environment, run_notebook
from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.local.backends import INSTALL_HINT, model_available
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ENDPOINTS = [("endpoint-name", "tgi"), ("chat", "tgi-messages"), ("lmi", "lmi"), ("embed", "tei-embedding")]


def serve(backend: str) -> LocalEndpoint:
    return LocalEndpoint(ServerConfig(endpoints=[EndpointSpec(n, f, backend) for n, f in ENDPOINTS])).start()


@pytest.fixture(scope="module")
def deterministic() -> Iterator[LocalEndpoint]:
    server = serve("deterministic")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model() -> Iterator[LocalEndpoint]:
    if not model_available():
        pytest.fail(INSTALL_HINT)
    server = serve("model")
    yield server
    server.stop()


def execute(name: str, server: LocalEndpoint, tmp_path: Path, **options) -> dict:
    nb = run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path, environment(server), **options)
    return nb  # type: ignore[return-value]


def outputs(nb) -> str:
    """Everything the notebook showed, as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts += [v if isinstance(v, str) else json.dumps(v) for v in out.get("data", {}).values()]
    return "\n".join(parts)


def test_notebooks_are_saved_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        assert all(not c.get("outputs") for c in nb["cells"]), path.name
        assert nb["cells"][0]["cell_type"] == "markdown", f"{path.name} opens with what it shows"


def test_01_quickstart_with_the_real_model(model, tmp_path):
    nb = execute("01-quickstart", model, tmp_path)
    found = answers(nb)
    assert len(found) == 2 and all("3 days" in a for a in found)
    assert "first token after" in outputs(nb)


def test_02_credentials_and_cross_account(deterministic, tmp_path):
    text = outputs(execute("02-credentials-and-cross-account", deterministic, tmp_path))
    assert "eu-west-1" in text and "…0001" in text  # the profile's key id, masked
    assert "assumed-role/notebook-reader" in text and "expires" in text
    assert "(external client)" in text
    assert "demo-secret" not in text


def test_03_content_handlers(deterministic, tmp_path):
    nb = execute("03-content-handlers", deterministic, tmp_path)
    text = outputs(nb)
    assert "handler `seed`" in text and "3 days" in text
    assert "djl-inference" in text or "| lmi |" in text
    assert "X-Amzn-SageMaker-Custom-Attributes: accept_eula=true" in text


def test_04_document_qa_with_the_real_model(model, tmp_path):
    text = outputs(execute("04-document-qa", model, tmp_path))
    assert "3 days" in text
    assert "mode: map-reduce" in text and "map-reduce over 12 files" in text
    assert "output_text" in text


def test_08_retrieval_qa_with_the_real_models(model, tmp_path):
    nb = execute("08-retrieval-qa", model, tmp_path)
    text = outputs(nb)
    assert "mode: retrieve" in text and "memo-037.txt" in text
    assert "0 chunks embedded" in text  # the second question embedded nothing but itself
    assert "an embeddings endpoint is set" in text and "384" in text


def test_05_batch_failures_retry_streaming_and_chat(deterministic, tmp_path):
    text = outputs(execute("05-batch-and-streaming", deterministic, tmp_path))
    assert "6/6 ok" in text and "4/6 ok · 2 failed" in text and "CUDA out of memory" in text
    assert "My name is Ada" in text and "Chat history cleared" in text


def test_06_panel(deterministic, tmp_path):
    nb = execute("06-panel", deterministic, tmp_path, store_widget_state=True)
    views = [o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json"
             in o.get("data", {})]
    assert views and "sm-panel" in json.dumps(nb.metadata["widgets"])
    assert "POST /endpoints/endpoint-name/invocations" in outputs(nb)


def test_07_langchain(deterministic, tmp_path):
    text = outputs(execute("07-langchain", deterministic, tmp_path))
    assert "Peter stayed at the hospital for 3 days." in text
    assert "You said: Count to five." in text.replace("\n", "")  # streamed chunk by chunk


def test_saved_notebooks_hold_no_secret(deterministic, tmp_path, monkeypatch):
    """Static keys and a session token in the kernel's session: nothing of them in any saved file."""
    env = {**deterministic.env, "AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
           "AWS_SESSION_TOKEN": FAKE_TOKEN}
    nb_path = tmp_path / "secrets.ipynb"
    nbformat.write(new_notebook(cells=[
        new_code_cell("%load_ext sm_magic"),
        new_code_cell("%sagemaker session"),
        new_code_cell("%%sagemaker endpoint-name --out r\nhello"),
        new_code_cell("%%sagemaker missing-endpoint\nhello", metadata={"tags": ["raises-exception"]}),
        new_code_cell("%sagemaker history"),
        new_code_cell("from sm_magic.widgets.panel import Panel\nimport os\n"
                      "p = Panel(get_ipython().find_magic('sagemaker').__self__.runner, get_ipython())\n"
                      "p.access_key.set(os.environ['AWS_ACCESS_KEY_ID'])\n"
                      "p.secret_key.set(os.environ['AWS_SECRET_ACCESS_KEY'])\n"
                      "p.session_token.set(os.environ['AWS_SESSION_TOKEN'])\n"
                      f"p.endpoint_url.value = {deterministic.url!r}\np.region.value = 'us-east-1'\n"
                      "p.connect.click()\np.widget"),
        new_code_cell("repr(get_ipython().find_magic('sagemaker').__self__.state.session), r"),
    ]), nb_path)
    monkeypatch.delenv("SM_MAGIC_LOCAL_URL", raising=False)  # the keys above, not the local fake ones
    run_notebook(nb_path, tmp_path / "out", env, store_widget_state=True, timeout=120)
    saved = (tmp_path / "out" / "secrets.ipynb").read_text() + (tmp_path / "out" / "secrets.html").read_text()
    assert "EndpointNotFound" in saved and "account" in saved  # it ran
    assert "application/vnd.jupyter.widget-state+json" in saved
    for secret in (FAKE_SECRET, FAKE_TOKEN, FAKE_KEY_ID):
        assert secret not in saved, secret


def test_09_async_inference(moto_server, tmp_path):
    reports = EndpointSpec("reports", "tgi", "deterministic", async_=True)
    with LocalEndpoint(ServerConfig(endpoints=[reports], s3_endpoint_url=moto_server)) as server:
        env = {**environment(server), "AWS_ENDPOINT_URL_S3": moto_server}
        text = outputs(run_notebook(NOTEBOOKS / "09-async-inference.ipynb", tmp_path, env))
    assert "3 days" in text and "| reports | InService" in text and "| yes |" in text
    assert "6/6 ok" in text and "6 from the journal" in text and "You said: Say hello." in text
    assert "s3://sm-magic-local/async-endpoint-outputs/reports/" in text
