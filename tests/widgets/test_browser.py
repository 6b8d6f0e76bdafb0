"""The panel in a real browser: JupyterLab 4 + Playwright + Debian chromium, against the local endpoint.

Screenshots of every step go to out/screenshots/ (and one on failure). These tests fail, never
skip, when chromium is missing: `make test` installs it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from tests.conftest import SEED_CONTEXT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "out" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: `make test` installs it (apt-get install chromium).")
    root = tmp_path_factory.mktemp("lab")
    specs = [EndpointSpec("endpoint-name", "tgi", "deterministic", token_delay=0.02)]
    server = LocalEndpoint(ServerConfig(endpoints=specs)).start()
    nb = new_notebook(cells=[new_code_cell("%load_ext sm_magic"), new_code_cell("%sagemaker panel"),
                             new_code_cell("%%sagemaker --dry-run\nHello from the cell")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / "panel.ipynb")
    for name in ("config", "runtime", "settings", "workspaces", "ipython", "data"):
        (root / f".{name}").mkdir()
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    widgets = root / ".settings" / "@jupyter-widgets" / "jupyterlab-manager"
    widgets.mkdir(parents=True)
    (widgets / "plugin.jupyterlab-settings").write_text('{"saveState": true}')  # saved notebooks keep widget state
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"), "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"),
           "IPYTHONDIR": str(root / ".ipython"), "SM_MAGIC_LOCAL_URL": server.url,
           "SM_MAGIC_ENDPOINTS": str(root / "endpoints.ini"), **server.env,
           "AWS_ACCESS_KEY_ID": "local-access-key", "AWS_SECRET_ACCESS_KEY": "local-secret"}
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
         "--LabApp.expose_app_in_browser=True"],  # window.jupyterapp: save as autosave does, focus untouched
        env=env, stdout=subprocess.DEVNULL, stderr=(root / "lab.log").open("w"), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError((root / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        yield {"url": f"{base}/lab/tree/panel.ipynb?token={token}", "root": root, "server": server}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        server.stop()


@pytest.fixture
def page(lab, request) -> Iterator:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            yield page
        finally:
            if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
                page.screenshot(path=str(SHOTS / f"{request.node.name}-failure.png"), full_page=True)
            browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def run_cell(page, index: int) -> None:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def enter(page, css: str, text: str, key: str = "Enter") -> None:
    """Type into a panel field and commit it (the panel's fields update on Enter or blur)."""
    page.locator(css).fill(text)
    page.locator(css).press(key)


def panel_tab(page, title: str) -> None:
    page.locator(".sm-panel .lm-TabBar-tab", has_text=title).first.click()


def test_panel_streams_the_seed_answer_and_shares_state_with_the_magic(lab, page):
    page.goto(lab["url"])
    page.wait_for_selector('[title^="Change kernel"]:has-text("Idle")', timeout=60_000)
    shot(page, "01-notebook-open")
    run_cell(page, 0)
    run_cell(page, 1)
    page.wait_for_selector(".sm-panel", timeout=30_000)
    shot(page, "02-panel-open")

    panel_tab(page, "Session")
    page.locator(".sm-local button, button.sm-local").first.click()
    page.locator("button.sm-connect").click()
    page.wait_for_selector(".sm-identity:has-text('Connected')", timeout=20_000)
    shot(page, "03-connected")

    panel_tab(page, "Endpoint")
    enter(page, ".sm-endpoint input", "endpoint-name")
    enter(page, ".sm-handler input", "tgi")
    shot(page, "04-endpoint")

    panel_tab(page, "Prompt")
    prompt = f"{SEED_CONTEXT}\nQuestion: How long was Elizabeth hospitalized?\nAnswer:"
    enter(page, ".sm-prompt textarea", prompt, key="Tab")
    page.locator(".sm-stream input").check()
    page.locator("button.sm-run").click()
    page.wait_for_selector(".sm-answer:has-text('3 days')", timeout=30_000)
    page.wait_for_selector(".sm-footer:has-text('tokens')", timeout=30_000)
    shot(page, "05-answer-streamed")
    assert "3 days" in page.locator(".sm-answer").inner_text()

    panel_tab(page, "Parameters")
    enter(page, ".sm-temperature input", "0.25", key="Tab")
    enter(page, ".sm-max-new-tokens input", "17", key="Tab")
    shot(page, "06-parameters")
    run_cell(page, 2)
    output = page.locator(".jp-Notebook .jp-Cell").nth(2).locator(".jp-OutputArea")
    output.locator("text=POST /endpoints/endpoint-name/invocations").wait_for(timeout=20_000)
    shot(page, "07-cell-uses-panel-settings")
    text = output.inner_text()
    assert '"temperature": 0.25' in text and '"max_new_tokens": 17' in text
    body = json.loads(text[text.index("{"): text.rindex("}") + 1])
    assert body["inputs"] == "Hello from the cell"


SECRET = "fake-secret-never-print-me-0042"  # the same obviously fake key the other secret tests look for


def saved_after(path: Path, page, how: str) -> dict | None:
    """Save the notebook ``how`` a user can, then the notebook as saved on disk (None: nothing was saved).

    ``ctrl-s`` presses the keys where the focus is; ``command`` runs Lab's save command as autosave does,
    leaving the focus (and a half-typed field) alone; ``button`` clicks the toolbar's save button, which
    takes the focus away from the field first.
    """
    before = path.stat().st_mtime
    if how == "ctrl-s":
        page.keyboard.press("Control+s")
    elif how == "command":
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    else:
        page.locator('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]').click()
    deadline = time.time() + (5 if how == "ctrl-s" else 20)
    while path.stat().st_mtime <= before:
        if time.time() > deadline:
            assert how == "ctrl-s", f"the notebook was not saved ({how})"
            return None
        time.sleep(0.1)
    time.sleep(0.3)  # let the writer finish
    return json.loads(path.read_text())


def assert_no_secret(saved: dict | None, where: str, secret: str = "fake-secret-never-print-me-0042") -> None:
    text = json.dumps(saved)
    for piece in (secret, secret[:12], secret[-12:]):
        assert piece not in text, f"{where}: {piece!r} is in the saved notebook"


SECRET = "fake-secret-never-print-me-0042"  # the same obviously fake key the other secret tests look for


def open_panel(lab, page, name: str, *more: str) -> Path:
    """A new notebook ``name`` (cells ``more`` after the panel) with the panel displayed on its Session tab."""
    nb = new_notebook(cells=[new_code_cell("%load_ext sm_magic"), new_code_cell("%sagemaker panel"),
                             *map(new_code_cell, more)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    path = lab["root"] / name
    nbformat.write(nb, path)
    page.goto(lab["url"].replace("panel.ipynb?", f"{name}?reset&"))  # reset: only this notebook is open
    page.wait_for_selector('[title^="Change kernel"]:has-text("Idle")', timeout=60_000)
    run_cell(page, 0)
    run_cell(page, 1)
    page.wait_for_selector(".sm-panel", timeout=30_000)
    panel_tab(page, "Session")
    return path


def test_a_typed_secret_is_never_saved_in_the_notebook(lab, page):
    path = open_panel(lab, page, "secret.ipynb")
    field = page.locator(".sm-secret-key input")
    field.click()
    page.keyboard.type(SECRET[:20])  # mid-typing: not committed yet
    shot(page, "secret-01-mid-typing")
    assert_no_secret(saved_after(path, page, "ctrl-s"), "Ctrl+S mid-typing")
    saved = saved_after(path, page, "command")
    shot(page, "secret-02-saved-mid-typing")
    assert field.input_value() == SECRET[:20]  # still half-typed: the save did not commit it
    assert saved and saved["metadata"].get("widgets"), "no widget state saved: the check would prove nothing"
    assert "Secret key" in json.dumps(saved["metadata"]["widgets"])  # the panel's fields are in it
    assert_no_secret(saved, "saved mid-typing")

    field.click()
    page.keyboard.press("End")
    page.keyboard.type(SECRET[20:])
    page.keyboard.press("Enter")  # commit: the kernel takes the value and clears the field
    page.wait_for_selector('.sm-secret-key input[placeholder="secret set ✓"]', timeout=20_000)
    assert field.input_value() == ""
    shot(page, "secret-03-committed")
    assert_no_secret(saved_after(path, page, "ctrl-s"), "Ctrl+S after commit")
    assert_no_secret(saved_after(path, page, "command"), "saved after commit")
    checkpoints = list((lab["root"] / ".ipynb_checkpoints").glob("secret-checkpoint.ipynb"))
    assert checkpoints and all(SECRET not in c.read_text() for c in checkpoints)

    page.locator(".sm-access-key input").fill("ASIAFAKEKEYID0000042")  # committed on blur this time
    page.locator(".sm-access-key input").press("Tab")
    page.wait_for_selector('.sm-access-key input[placeholder="secret set ✓"]', timeout=20_000)
    assert_no_secret(saved_after(path, page, "command"), "saved after blur", secret="ASIAFAKEKEYID0000042")
    shot(page, "secret-04-saved-after-blur")


def test_saving_with_the_button_while_typing_a_secret_does_not_save_it(lab, page):
    path = open_panel(lab, page, "secret-race.ipynb", "import time\ntime.sleep(6)")
    run_cell(page, 2)  # a busy kernel (a cell still running) answers the field's update only after it
    page.locator(".sm-session-token input").click()
    page.keyboard.type(SECRET)
    saved = saved_after(path, page, "button")  # the click blurs the field: commit and save race
    shot(page, "secret-05-saved-by-the-button-while-typing")
    page.wait_for_selector('.sm-session-token input[placeholder="secret set ✓"]', timeout=20_000)
    checkpoint = lab["root"] / ".ipynb_checkpoints" / "secret-race-checkpoint.ipynb"
    assert_no_secret(json.loads(checkpoint.read_text()), "the checkpoint written by the button")
    assert_no_secret(saved, "saved by the toolbar button while typing")
