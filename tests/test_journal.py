"""The call journal against real SQLite files: threads, processes, kill -9, concurrent reads."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sm_magic import journal as journal_module
from sm_magic.journal import MAX_BATCH, MAX_PENDING, Journal
from sm_magic.records import CallRecord, JournalError, Submission, fingerprint, home, session_id
from sm_magic.session import SessionSettings

ROOT = Path(__file__).resolve().parent.parent


def count(path: Path, where: str = "1") -> int:
    with sqlite3.connect(path, timeout=10) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM calls WHERE {where}").fetchone()[0]


def call(i: int, **changes) -> CallRecord:
    return CallRecord(**{"endpoint": "ep", "prompt": f"prompt {i}", "answer": f"answer {i}", **changes})


def child(script: str, db: Path) -> subprocess.Popen:
    """A Python process running ``script`` with ``db`` and ``Journal`` in scope; its stdout is a pipe."""
    code = "import sys, time\nfrom sm_magic.journal import Journal\nfrom sm_magic.records import CallRecord\n" + \
        f"db = {str(db)!r}\n" + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


@pytest.fixture
def journal(db: Path):
    j = Journal(db)
    yield j
    j.close()


def test_sixteen_threads_record_500_each_and_none_is_lost(journal: Journal, db: Path) -> None:
    def work(t: int) -> None:
        for i in range(500):
            journal.record_call(call(i, job_id=t, item=i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(1, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.flush()
    assert count(db) == 16 * 500
    assert count(db, "job_id = 7") == 500
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(DISTINCT job_id || '/' || item) FROM calls").fetchone()[0] == 8000


def test_two_processes_write_at_once_and_both_are_complete(db: Path) -> None:
    script = """
        j = Journal(db)
        for i in range(1000):
            j.record_call(CallRecord(endpoint=sys.argv[0], prompt=str(i), session=SESSION))
        j.close()
    """
    procs = [child(script.replace("SESSION", repr(name)), db) for name in ("first", "second")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert count(db, "session = 'first'") == 1000
    assert count(db, "session = 'second'") == 1000


def test_kill_9_loses_at_most_the_calls_not_yet_committed(db: Path) -> None:
    """Recording as fast as it can, the process is killed; what it recorded is on disk but for the queue."""
    proc = child("""
        j = Journal(db)
        for i in range(1_000_000):
            j.record_call(CallRecord(endpoint="ep", prompt=str(i)))
            print(i + 1, flush=True)
    """, db)
    recorded = 0
    for line in proc.stdout:
        recorded = int(line)
        if recorded >= 5000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert recorded >= 5000
    assert count(db) >= recorded - (MAX_PENDING + MAX_BATCH)


def test_kill_9_after_flush_loses_nothing(db: Path) -> None:
    proc = child("""
        j = Journal(db)
        for i in range(3000):
            j.record_call(CallRecord(endpoint="ep", prompt=str(i)))
        j.flush()
        print("flushed", flush=True)
        time.sleep(600)
    """, db)
    assert proc.stdout.readline().strip() == "flushed"
    proc.kill()
    proc.wait()
    assert count(db) == 3000


def test_calls_reach_the_disk_without_flush_or_close(db: Path) -> None:
    """The writer commits on its own: another process sees every call while the writer's process idles."""
    proc = child("""
        j = Journal(db)
        for i in range(2000):
            j.record_call(CallRecord(endpoint="ep", prompt=str(i)))
        print("recorded", flush=True)
        time.sleep(600)
    """, db)
    assert proc.stdout.readline().strip() == "recorded"
    seen, deadline = 0, time.monotonic() + 30
    while seen < 2000 and time.monotonic() < deadline:
        seen = count(db) if db.exists() else 0
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert count(db) == 2000


def test_reads_while_another_process_writes_see_a_growing_journal(db: Path) -> None:
    proc = child("""
        j = Journal(db)
        for i in range(20000):
            j.record_call(CallRecord(endpoint="ep", prompt=str(i)))
        j.close()
    """, db)
    reader = Journal(db)
    sizes = []
    try:
        while proc.poll() is None:
            if db.exists():
                rows = reader.history(limit=1)
                sizes.append(rows[0].id if rows else 0)
        assert proc.wait() == 0
        assert reader.history(limit=1)[0].id == 20000
    finally:
        reader.close()
    assert sizes == sorted(sizes)
    assert len(set(sizes)) > 1  # it really read while rows were arriving


def test_a_process_reads_its_own_calls_at_once(journal: Journal) -> None:
    journal.record_call(call(1))
    assert [r.prompt for r in journal.history()] == ["prompt 1"]


def test_a_call_alone_is_committed_at_once_and_a_loop_of_calls_shares_transactions(
        journal: Journal, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook's one call is on disk with no flush (another connection sees it); 300 calls made a
    millisecond apart are written in a few group commits, not 300 (each costs the process a transaction)."""
    transactions = []
    write = Journal._write
    monkeypatch.setattr(Journal, "_write", lambda self, conn, batch: (transactions.append(len(batch)),
                                                                       write(self, conn, batch))[1])
    journal.record_call(call(0))
    deadline = time.monotonic() + 10
    while (not db.exists() or count(db) == 0) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert count(db) == 1 and transactions == [1]
    time.sleep(2 * journal_module.COMMIT_DELAY)  # the next call is alone again
    for i in range(1, 301):  # a millisecond apart, as calls to a fast endpoint are
        journal.record_call(call(i))
        time.sleep(0.001)
    journal.flush()
    assert count(db) == 301
    assert len(transactions) < 60, transactions


def test_a_row_sqlite_refuses_costs_only_itself_and_mappings_are_kept_as_sent(journal: Journal) -> None:
    """Hostile pass: one odd record lost its whole group commit, and parameters changed after the call
    were stored changed."""
    params = {"temperature": 0.5, "stop": ["END"]}
    journal.record_call(call(1, params=params, usage={(1, 2): 3}))  # a key JSON cannot take
    params["temperature"] = 99  # the user changes r.params afterwards
    params["stop"].append("X")
    journal.record_call(call(2, answer=object()))  # a type SQLite cannot store
    journal.record_call(call(3))
    with pytest.raises(JournalError, match=r"1 call\(s\) could not be written"):
        journal.flush()
    rows = {r.prompt: r for r in journal.history()}
    assert sorted(rows) == ["prompt 1", "prompt 3"]
    assert rows["prompt 1"].params == {"temperature": 0.5, "stop": ["END"]}
    assert rows["prompt 1"].usage == {"unencodable": "{(1, 2): 3}"}


def test_history_filters_by_session_endpoint_status_and_text(journal: Journal) -> None:
    journal.record_call(CallRecord(endpoint="a", prompt="What is 50% of_10?", answer="Five", session="k1"))
    journal.record_call(CallRecord(endpoint="b", prompt="Capital of France?", answer="Paris", session="k1"))
    journal.record_call(CallRecord(endpoint="a", prompt="Capital of Spain?", status="error",
                                   error_class="ModelError", error_message="boom", session="k2"))
    assert [r.prompt for r in journal.history(text="capital")] == ["Capital of Spain?", "Capital of France?"]
    assert [r.answer for r in journal.history(text="PARIS")] == ["Paris"]
    assert [r.answer for r in journal.history(text="50% of_")] == ["Five"]
    assert journal.history(text="5_%") == []  # % and _ are literal characters, not wildcards
    assert [r.endpoint for r in journal.history(session="k1")] == ["b", "a"]
    assert [r.session for r in journal.history(endpoint="a")] == ["k2", "k1"]
    assert [r.error_class for r in journal.history(status="error")] == ["ModelError"]
    assert len(journal.history(limit=2)) == 2


def test_a_record_round_trips_every_field(journal: Journal) -> None:
    record = CallRecord(endpoint="ep", prompt="p", status="truncated", answer="a", handler="tgi", region="eu-west-1",
                        params={"temperature": 0.2, "stop": ["\n"]}, options={"target_variant": "blue"},
                        usage={"completion_tokens": 3}, latency=0.25, first_token=0.05, error_class="StreamError",
                        error_message="no end marker", job_id=4, item=2, template="{text}", session="s1")
    journal.record_call(record)
    [back] = journal.history()
    assert back.id == 1
    back.id = None
    assert back == record


def test_jobs_finished_items_and_resume_lookups(journal: Journal) -> None:
    fp = fingerprint("ep", "{text}", {"temperature": 0}, {}, ["a", "b", "c"])
    job = journal.start_job("batch", "ep", fp, 3, {"label": "ep"})
    journal.record_call(call(0, job_id=job, item=0, status="error", error_class="Throttled"))
    journal.record_call(call(0, job_id=job, item=0))  # a retry that worked
    journal.record_call(call(1, job_id=job, item=1, answer="first"))
    journal.record_call(call(1, job_id=job, item=1, answer="second"))
    journal.record_call(call(2, job_id=job, item=2, status="error"))
    done = journal.finished_items(job)
    assert sorted(done) == [0, 1]
    assert done[1].answer == "second"
    [info] = journal.jobs()
    assert (info.id, info.kind, info.total, info.done, info.failed, info.status) == (job, "batch", 3, 2, 1, "running")
    assert info.meta == {"label": "ep"}
    assert journal.find_job(fp).id == job
    assert journal.find_job(fingerprint("ep", "{text}", {"temperature": 0}, {}, ["a", "b"])) is None
    again = journal.start_job("batch", "ep", fp, 3)
    assert journal.find_job(fp).id == again  # the latest with that fingerprint
    journal.finish_job(job, "partial")
    assert journal.job(job).status == "partial" and journal.job(job).finished is not None


def test_async_submissions_are_kept_per_item(journal: Journal) -> None:
    job = journal.start_job("async", "ep", None, 2)
    journal.record_submission(Submission(job, 0, time.time(), "inf-0", "s3://b/out/0.out", "s3://b/fail/0"))
    journal.record_submission(Submission(job, 1, time.time(), "inf-1", "s3://b/out/1.out", "s3://b/fail/1"))
    subs = journal.submissions(job)
    assert subs[1].output_location == "s3://b/out/1.out" and subs[0].inference_id == "inf-0"


def test_fingerprint_follows_every_input_and_takes_a_generator() -> None:
    base = fingerprint("ep", "{text}", {"t": 1}, {"v": "x"}, ["a", "b"])
    assert fingerprint("ep", "{text}", {"t": 1}, {"v": "x"}, (s for s in ["a", "b"])) == base
    for other in (fingerprint("ep2", "{text}", {"t": 1}, {"v": "x"}, ["a", "b"]),
                  fingerprint("ep", "{item}", {"t": 1}, {"v": "x"}, ["a", "b"]),
                  fingerprint("ep", "{text}", {"t": 2}, {"v": "x"}, ["a", "b"]),
                  fingerprint("ep", "{text}", {"t": 1}, {"v": "y"}, ["a", "b"]),
                  fingerprint("ep", "{text}", {"t": 1}, {"v": "x"}, ["b", "a"]),
                  fingerprint("ep", "{text}", {"t": 1}, {"v": "x"}, ["ab"]),
                  fingerprint("ep", "{text}", {"t": 1}, {"v": "x"}, ["a", "b", ""])):
        assert other != base
    rows = [{"q": 1, "text": "x"}]
    assert fingerprint("e", None, None, None, rows) == fingerprint("e", None, {}, {}, [{"text": "x", "q": 1}])


def test_a_lone_surrogate_is_stored_not_lost(journal: Journal) -> None:
    journal.record_call(call(1))
    journal.record_call(CallRecord(endpoint="ep", prompt="bad \ud800 text", answer="ok"))
    journal.record_call(call(3))
    journal.flush()
    assert [r.prompt for r in journal.history()] == ["prompt 3", "bad \ufffd text", "prompt 1"]


def test_settings_objects_are_refused(journal: Journal) -> None:
    settings = SessionSettings(access_key_id="AKIAFAKE", secret_access_key="fake-secret")
    with pytest.raises(TypeError, match="mapping"):
        journal.record_call(CallRecord(endpoint="ep", prompt="p", options=settings))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        journal.record_call(CallRecord(endpoint="ep", prompt="p", status="weird"))
    journal.flush()
    assert journal.history() == []


def test_a_journal_that_is_off_writes_nothing(db: Path) -> None:
    j = Journal(db, enabled=False)
    j.record_call(call(1))
    assert j.start_job("batch", "ep", "fp", 1) == 0
    j.flush()
    assert j.history() == [] and j.jobs() == []
    assert not db.exists()
    j.close()


def test_the_file_is_private_and_lives_in_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_MAGIC_HOME", str(tmp_path / "home"))
    assert home() == tmp_path / "home"
    j = Journal()
    j.record_call(call(1))
    j.close()
    assert j.path == tmp_path / "home" / "journal.sqlite3"
    assert stat.S_IMODE(j.path.stat().st_mode) == 0o600
    assert Journal(j.path).history()[0].prompt == "prompt 1"  # close + reopen


def test_a_locked_file_drops_calls_loudly_and_the_journal_recovers(journal: Journal, db: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "BUSY_TIMEOUT", 0.2)
    journal.record_call(call(1))
    journal.flush()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    journal.close()
    journal.record_call(call(2))  # reopened with the short timeout
    with pytest.raises(JournalError, match=r"1 call\(s\) could not be written.*locked"):
        journal.flush()
    holder.execute("ROLLBACK")
    holder.close()
    journal.record_call(call(3))
    journal.flush()
    assert [r.prompt for r in journal.history()] == ["prompt 3", "prompt 1"]


def test_session_id_is_the_kernel_id_in_a_real_kernel(tmp_path: Path) -> None:
    """Started the way a Jupyter server starts kernels (connection file ``kernel-<id>.json``)."""
    from jupyter_client.multikernelmanager import MultiKernelManager

    mkm = MultiKernelManager(connection_dir=str(tmp_path))
    kernel_id = mkm.start_kernel(kernel_name="python3")
    kc = mkm.get_kernel(kernel_id).client()
    kc.start_channels()
    out: list[str] = []
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive("from sm_magic.records import session_id; print(session_id(), end='')",
                                       output_hook=lambda msg: out.append(msg["content"].get("text", "")),
                                       timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        mkm.shutdown_all(now=True)
    assert "".join(out) == kernel_id
    assert session_id() == session_id() != kernel_id  # this process: a uuid, stable


def test_a_forked_child_writes_through_its_own_writer(journal: Journal, db: Path) -> None:
    import multiprocessing

    journal.record_call(call(1))
    journal.flush()

    def in_child() -> None:
        journal.record_call(call(2))
        journal.flush()
        assert [r.prompt for r in journal.history()] == ["prompt 2", "prompt 1"]

    child_process = multiprocessing.get_context("fork").Process(target=in_child)
    child_process.start()
    child_process.join(60)
    assert child_process.exitcode == 0
    journal.record_call(call(3))
    assert [r.prompt for r in journal.history()] == ["prompt 3", "prompt 2", "prompt 1"]


def test_a_fork_while_the_writer_commits_leaves_the_child_a_working_journal(journal: Journal, db: Path) -> None:
    """Hostile pass: a fork in the middle of a commit copied SQLite's lock bookkeeping into the child, whose
    own rows then waited out the busy timeout and were dropped ("database is locked")."""
    import os

    children = []
    for i in range(30):
        for k in range(20):  # the writer is committing these when the fork comes
            journal.record_call(call(1000 * i + k))
        pid = os.fork()
        if pid == 0:
            try:
                journal.record_call(call(-i))
                journal.flush()
                os._exit(0)
            except BaseException:
                os._exit(3)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0] * 30
    journal.flush()
    assert count(db) == 30 * 20 + 30


def test_a_journal_that_cannot_be_opened_says_so(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the home folder should be")
    j = Journal(tmp_path / "not-a-dir" / "journal.sqlite3")
    with pytest.raises(JournalError, match="could not be opened") as raised:
        j.record_call(call(1))
    assert "SM_MAGIC_HOME" in raised.value.explain()
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="could not be opened"):
        Journal(damaged).record_call(call(1))


def test_a_failed_write_is_reported_by_the_next_record_not_never(journal: Journal, db: Path) -> None:
    """A disk that fills up (here: SQLite refusing every insert) must not silently end the history."""
    journal.record_call(call(1))
    journal.flush()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TRIGGER full BEFORE INSERT ON calls BEGIN SELECT RAISE(ABORT, 'database or disk "
                     "is full'); END")
    journal.record_call(call(2))
    deadline = time.monotonic() + 10
    while journal.dropped == 0 and time.monotonic() < deadline:  # the writer's commit fails in the background
        time.sleep(0.01)
    with pytest.raises(JournalError, match=r"1 call\(s\) could not be written.*disk is full"):
        journal.record_call(call(3))
    assert count(db) == 1


def test_a_job_whose_kernel_is_a_zombie_or_whose_pid_was_reused_is_not_running() -> None:
    """Hostile pass: a killed kernel not yet reaped (or its pid given to a new process) blocked resume forever."""
    from sm_magic.records import JobInfo, owner

    def job(**meta) -> JobInfo:
        return JobInfo(1, "batch", "ep", "f", 10, time.time(), "running", "s", {**owner(), **meta})

    assert job().owner_alive is True  # this very process
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert job(pid=zombie.pid, started=None).owner_alive is False  # exited, not reaped
    zombie.wait()
    assert job(started=-1).owner_alive is False  # this pid, but a process started at another time
