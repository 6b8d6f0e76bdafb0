"""Durable work in real kernels: a batch survives kill -9, history survives a restart, aliases survive two kernels."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from sm_magic.aliases import Alias, AliasStore
from sm_magic.errors import ConfigError, ModelError
from sm_magic.local import EndpointSpec, Fault, LocalEndpoint, ServerConfig
from tests.conftest import FAKE_SECRET, FAKE_TOKEN

ITEMS = 500
CONCURRENCY = 8


@pytest.fixture(scope="module")
def paced() -> Iterator[LocalEndpoint]:
    """A 50 ms endpoint in this process; kernels are other processes."""
    with LocalEndpoint(ServerConfig(endpoints=[EndpointSpec("paced", "tgi", "deterministic", latency=0.05)])) as s:
        yield s


class Kernel:
    """A real IPython kernel with sm_magic loaded, pointed at the local endpoint."""

    def __init__(self, home: Path, url: str):
        env = {**os.environ, "SM_MAGIC_HOME": str(home), "SM_MAGIC_LOCAL_URL": url,
               "SM_MAGIC_ENDPOINTS": str(home / "endpoints.ini")}
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, extra_arguments=["--HistoryManager.enabled=False"])
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.run("%load_ext sm_magic")

    def run(self, code: str, timeout: float = 120) -> str:
        """Run code; return its stdout and text results; raise on an error."""
        out: list[str] = []

        def collect(msg: dict) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                out.append(f"ERROR {content['ename']}: {content['evalue']}")

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=collect)
        text = "".join(out)
        assert reply["content"]["status"] == "ok", text
        return text

    def execute_async(self, code: str) -> None:
        self.client.execute(code)

    def kill(self) -> None:
        os.kill(self.manager.provisioner.process.pid, signal.SIGKILL)  # kill -9
        self.manager.provisioner.process.wait()
        self.client.stop_channels()

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def test_killed_batch_resumes_in_a_new_kernel_without_redoing_finished_items(paced, sm_magic_home):
    first = Kernel(sm_magic_home, paced.url)
    first.run(f"questions = [f'question {{i}}' for i in range({ITEMS})]")
    before = paced.calls["paced"]
    first.execute_async(f"%%sagemaker paced --handler tgi --batch questions --concurrency {CONCURRENCY} --yes "
                        "--out answers\nQ: {text}")
    while paced.calls["paced"] - before < ITEMS // 3:  # a third of the batch is done: kill -9
        time.sleep(0.02)
    first.kill()
    called_before_kill = paced.calls["paced"] - before
    assert called_before_kill < ITEMS

    second = Kernel(sm_magic_home, paced.url)
    try:
        jobs = second.run("shown = %sagemaker jobs\nprint(shown)")
        assert "batch" in jobs and f"{ITEMS}" in jobs
        second.run(f"questions = [f'question {{i}}' for i in range({ITEMS})]")
        second.run(f"%%sagemaker paced --handler tgi --batch questions --concurrency {CONCURRENCY} --yes --resume "
                   "--out answers\nQ: {text}")
        summary = second.run("print(answers.summary()); print(answers.texts == "
                             f"[f'You said: Q: question {{i}}' for i in range({ITEMS})])")
    finally:
        second.stop()
    total = paced.calls["paced"] - before
    assert summary.strip().endswith("True")  # every answer, in input order
    assert f"{ITEMS}/{ITEMS} ok" in summary and "from the journal" in summary
    assert total <= ITEMS + CONCURRENCY  # only the calls in flight at the kill were made twice


def test_history_survives_a_restart_and_all_shows_two_kernels(paced, sm_magic_home):
    one = Kernel(sm_magic_home, paced.url)
    one.run("%%sagemaker paced --handler tgi\nfrom the first kernel")
    one.stop()
    two = Kernel(sm_magic_home, paced.url)
    try:
        two.run("%%sagemaker paced --handler tgi\nfrom the second kernel")
        mine = two.run("shown = %sagemaker history\nprint(shown)")
        everyone = two.run("shown = %sagemaker history --all\nprint(shown)")
        found = two.run("shown = %sagemaker history --all --search first\nprint(shown)")
    finally:
        two.stop()
    assert "from the second kernel" in mine and "from the first kernel" not in mine
    assert "from the first kernel" in everyone and "from the second kernel" in everyone
    assert "from the first kernel" in found and "from the second kernel" not in found


def test_the_journal_never_holds_a_secret(ip, local, moto_server, sm_magic_home):
    ip.run_line_magic("sagemaker", f"session --endpoint-url {local.url} --region us-east-1")
    state = ip.user_ns["_sm_magics"].state
    state.set_session(state.session.with_changes(access_key_id="AKIDLOCALTEST0000001",
                                                 secret_access_key=FAKE_SECRET, session_token=FAKE_TOKEN))
    ip.run_cell_magic("sagemaker", "tgi --handler tgi", "with static keys")
    state.set_session(state.session.with_changes(role_arn="arn:aws:iam::123456789012:role/x",
                                                 external_id="external-id-secret-42",
                                                 control_endpoint_url=moto_server))
    ip.run_cell_magic("sagemaker", "tgi --handler tgi", "with an assumed role")
    ip.user_ns["_sm_magics"].runner.journal.flush()
    raw = b"".join(p.read_bytes() for p in sm_magic_home.glob("journal.sqlite3*"))
    assert _rows(sm_magic_home) == 2  # both calls are there
    for secret in (FAKE_SECRET, FAKE_TOKEN, "external-id-secret-42"):
        assert secret.encode() not in raw


def _rows(home: Path) -> int:
    with sqlite3.connect(home / "journal.sqlite3") as db:
        return db.execute("SELECT count(*) FROM calls").fetchone()[0]


def test_logging_off_writes_nothing(ip, sm_magic_home):
    ip.run_line_magic("sagemaker", "config log=off")
    ip.run_cell_magic("sagemaker", "tgi --handler tgi", "not journaled")
    assert not (sm_magic_home / "journal.sqlite3").exists()
    rows = ip.run_line_magic("sagemaker", "history").rows
    assert rows[-1]["prompt"] == "not journaled"  # this kernel still shows it, from memory


def test_a_journal_that_refuses_the_jobs_end_never_costs_the_batch(ip, local, sm_magic_home):
    """Every call succeeded; the journal then fails (a full disk, here SQLite refusing the job's update):
    the answers are still the cell's, with the warning and a note, not a JournalError."""
    ip.run_cell_magic("sagemaker", "tgi --handler tgi", "the journal exists")
    ip.user_ns["_sm_magics"].runner.journal.flush()
    with sqlite3.connect(sm_magic_home / "journal.sqlite3") as db:
        db.execute("CREATE TRIGGER full BEFORE UPDATE ON jobs BEGIN SELECT RAISE(ABORT, 'database or disk is "
                   "full'); END")
    ip.user_ns["questions"] = [f"q{i}" for i in range(6)]
    with pytest.warns(UserWarning, match="no longer journaled.*disk is full"):
        answers = ip.run_cell_magic("sagemaker", "tgi --handler tgi --batch questions --yes", "Q {text}")
    assert answers.texts == [f"You said: Q q{i}" for i in range(6)]
    assert "6/6 ok" in answers.summary() and "not journaled" in answers.summary()


def _add_aliases(path: str, prefix: str, count: int) -> None:
    store = AliasStore(path)
    for i in range(count):
        store.add(Alias(f"{prefix}{i}", "tgi"))


def test_two_processes_adding_aliases_lose_nothing(tmp_path):
    path = str(tmp_path / "endpoints.ini")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_add_aliases, args=(path, p, 100)) for p in ("a", "b")]
    seen_empty = []
    done = threading.Event()

    def read_loop() -> None:
        while not done.is_set():
            if Path(path).exists() and Path(path).stat().st_size == 0:
                seen_empty.append(1)

    reader = threading.Thread(target=read_loop)
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    done.set()
    reader.join()
    assert len(AliasStore(path)) == 200 and not seen_empty


def test_sixteen_threads_adding_aliases(tmp_path):
    store = AliasStore(tmp_path / "endpoints.ini")
    errors: list[BaseException] = []

    def add(t: int) -> None:
        try:
            for i in range(25):
                store.add(Alias(f"t{t}-{i}", "tgi"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=add, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(AliasStore(tmp_path / "endpoints.ini")) == 400


def test_a_corrupt_aliases_file_never_stops_the_extension(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    path = tmp_path / "endpoints.ini"
    path.write_bytes(b"endpoint = no-section\n[good]\nendpoint = tgi\n"
                     b"[bad]\nendpoint = tgi\nregoin = us-west-2\n\xff\n")
    monkeypatch.setenv("SM_MAGIC_ENDPOINTS", str(path))
    from sm_magic.magics import SageMakerMagics

    with pytest.warns(UserWarning) as caught:
        magics = SageMakerMagics(shell=InteractiveShell.instance())
    text = " ".join(str(w.message) for w in caught)
    assert "line 1" in text and "regoin" in text and "Did you mean region" in text
    assert magics.state.aliases.get("good").endpoint == "tgi"
    with pytest.raises(Exception, match="regoin"):
        magics.state.aliases.get("bad")


def test_history_filters_hold_with_logging_off(ip, local, sm_magic_home):
    ip.run_line_magic("sagemaker", "config log=off")
    ip.run_cell_magic("sagemaker", "tgi --handler tgi", "Alpha question")
    ip.run_cell_magic("sagemaker", "lmi --handler lmi", "beta question")
    local.inject("faulty", Fault("model-error", message="Input too long"))
    with contextlib.suppress(ModelError):
        ip.run_cell_magic("sagemaker", "faulty --handler tgi", "gamma question")

    def prompts(options: str) -> list[str]:
        return [row["prompt"] for row in ip.run_line_magic("sagemaker", f"history {options}").rows]

    assert prompts("") == ["Alpha question", "beta question", "gamma question"]
    assert prompts("--endpoint lmi") == ["beta question"]
    assert prompts("--status error") == ["gamma question"]
    assert prompts("--status ok --search ALPHA") == ["Alpha question"]
    assert prompts("--search question --limit 2") == ["beta question", "gamma question"]
    ip.run_line_magic("sagemaker", "alias add teacher lmi --handler lmi")
    assert prompts("--endpoint teacher") == ["beta question"]  # an alias stands for its endpoint
    assert "No calls match." in repr(ip.run_line_magic("sagemaker", "history --search nowhere"))
    for flag in ("--job 3", "--all"):
        with pytest.raises(ConfigError, match=f"{flag} needs the journal, and logging is off"):
            ip.run_line_magic("sagemaker", f"history {flag}")
    assert not (sm_magic_home / "journal.sqlite3").exists()


def test_history_takes_an_alias_for_its_endpoint_in_the_journal(ip, local, sm_magic_home):
    ip.run_line_magic("sagemaker", "alias add teacher lmi --handler lmi")
    ip.run_cell_magic("sagemaker", "tgi --handler tgi", "to tgi")
    ip.run_cell_magic("sagemaker", "teacher", "through the alias")
    table = ip.run_line_magic("sagemaker", "history --endpoint teacher")
    assert [row["prompt"] for row in table.rows] == ["through the alias"]
    assert "alias teacher → endpoint lmi" in repr(table)
