"""The call journal: every call, every job and its items, in one SQLite file (WAL) under the sm_magic home.

Writing is cheap for the caller: :meth:`Journal.record_call` (one call) or a job's
:meth:`Journal.recorder` (its items) turns the call into a row and appends it to a queue; one writer
thread per journal (per process) drains the queue and commits what has arrived in one transaction
(group commit). A call alone is written at once; a job's rows, and calls made in quick succession,
wait up to :data:`COMMIT_DELAY` so that they share a transaction and the writer wakes a few dozen
times a second, not once per call (a durable row, a job's start and :meth:`Journal.flush` end the
wait). bench/journal.py compares designs.

Durability: with ``synchronous=NORMAL`` in WAL mode a committed row survives the process being
killed (not a power cut). A ``kill -9`` loses only the plain rows recorded since the last commit:
in time, :data:`COMMIT_DELAY` plus one commit (more while other threads keep the interpreter busy);
in count, at most :data:`MAX_PENDING` queued + :data:`MAX_BATCH` being written. ``durable=True``
returns once the row is committed (a job's slow item: it is never called twice). :meth:`Journal.flush`
returns once everything recorded before it is committed. Reads flush first, so a process always
sees its own calls. Several processes (kernels) share the file; SQLite's busy timeout orders their
commits.

Text search uses ``LIKE`` (23 ms over 100,000 calls); FTS5 would cost ~20 µs more per call and only
matches words.

Secrets: the record types hold explicit fields only (prompt, parameters, invoke options, usage...);
parameters, options and usage must be plain mappings, so a settings, session or credentials object is
refused, and nothing reads credentials from anywhere. Turning the journal off (``enabled=False``)
writes nothing and creates no file.
"""

from __future__ import annotations

import atexit
import json
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sm_magic.history import printable
from sm_magic.records import (
    CallRecord,
    JobInfo,
    JournalError,
    Submission,
    call_from_row,
    home,
    job_from_row,
    owner,
    session_id,
)

FILENAME = "journal.sqlite3"
STATUSES = frozenset({"ok", "error", "interrupted", "truncated", "partial"})
JOB_KINDS = frozenset({"batch", "qa-map", "async"})
MAX_PENDING = 2000  # rows queued before record_call waits for the writer
MAX_BATCH = 1000  # rows per transaction
COMMIT_DELAY = 0.02  # seconds a plain row waits for others to join its transaction
_OPEN: weakref.WeakSet[Journal] = weakref.WeakSet()  # told when the process forks
_HELD: list[Journal] = []  # the journals whose locks a fork in progress holds
BUSY_TIMEOUT = 10.0  # seconds another process may hold the write lock
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, endpoint TEXT, fingerprint TEXT, total INTEGER,
    created REAL NOT NULL, finished REAL, status TEXT NOT NULL DEFAULT 'running', session TEXT, meta TEXT);
CREATE INDEX IF NOT EXISTS jobs_fingerprint ON jobs (fingerprint, id);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, session TEXT, endpoint TEXT, region TEXT, handler TEXT,
    prompt TEXT, template TEXT, params TEXT, options TEXT, answer TEXT, usage TEXT, latency REAL,
    first_token REAL, status TEXT NOT NULL, error_class TEXT, error_message TEXT, job_id INTEGER, item INTEGER);
CREATE INDEX IF NOT EXISTS calls_session ON calls (session, id);
CREATE INDEX IF NOT EXISTS calls_job ON calls (job_id, item) WHERE job_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS submissions (
    job_id INTEGER NOT NULL, item INTEGER NOT NULL, time REAL NOT NULL, inference_id TEXT,
    output_location TEXT, failure_location TEXT, PRIMARY KEY (job_id, item));
"""

CALL_COLUMNS = ("time", "session", "endpoint", "region", "handler", "prompt", "template", "params", "options",
                "answer", "usage", "latency", "first_token", "status", "error_class", "error_message",
                "job_id", "item")
INSERT_CALL = f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({', '.join('?' * len(CALL_COLUMNS))})"
JSON_COLUMNS = ("params", "options", "usage")


class _Op:
    """A statement the writer runs in order with the calls around it (None: only wait for the commit);
    :meth:`wait` returns its lastrowid once committed. A bare lock is the cheapest wait there is."""

    __slots__ = ("_done", "args", "error", "result", "sql")

    def __init__(self, sql: str | None, args: tuple = ()):
        self.sql, self.args, self.result, self.error = sql, args, None, None
        self._done = threading.Lock()
        self._done.acquire()

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self._done.release()

    def wait(self) -> Any:
        self._done.acquire()
        if self.error is not None:
            raise self.error
        return self.result


_STOP = object()


def _json(value: Any, name: str) -> str | None:
    """A params / options / usage mapping as stored: JSON text, made now (the caller may change the mapping
    later; the row keeps what was sent). Settings, sessions or credentials objects are refused."""
    if value is None:
        return None
    if value.__class__ is dict and not value:  # most calls: no parameters, no options
        return "{}"
    if not isinstance(value, dict | Mapping):  # a dict is answered without asking the Mapping ABC
        raise TypeError(f"CallRecord.{name} must be a mapping (plain values only), not {type(value).__name__}")
    try:
        return _ENCODER.encode(value if value.__class__ is dict else dict(value))
    except (TypeError, ValueError, RecursionError):  # a key JSON cannot take, a loop: kept as text, not lost
        try:
            shown = repr(value)[:1000]
        except Exception:
            shown = f"<{type(value).__name__}>"
        return _ENCODER.encode({"unencodable": shown})


_ENCODER = json.JSONEncoder(default=str)  # one encoder: json.dumps(default=...) makes one per call
_BAD_ROW = (sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError,
            TypeError, ValueError, OverflowError)  # what one row can get wrong (a type, NULL, a number)


class Journal:
    """Calls and jobs in SQLite. Thread-safe; safe for several processes on one file.

    >>> journal = Journal()                      # ~/.sm_magic/journal.sqlite3 (or $SM_MAGIC_HOME)
    >>> journal.record_call(CallRecord(endpoint="qa", prompt="Hi", answer="Hello"))
    >>> journal.history(session=session_id(), limit=5)
    """

    def __init__(self, path: str | os.PathLike | None = None, enabled: bool = True):
        self.path = Path(path).expanduser() if path is not None else home() / FILENAME
        self.enabled = enabled
        self.dropped = 0  # calls that could not be written
        self.last_error: BaseException | None = None
        self._writer: threading.Thread | None = None
        self._init_queue()
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()  # held while the reader reads
        self._write_lock = threading.Lock()  # held while the writer writes (a fork waits for both: _before_fork)
        self._reported = 0
        self._pid = os.getpid()
        self._last_call = 0.0  # when record_call was last called (monotonic)
        _OPEN.add(self)

    def _init_queue(self) -> None:
        self._pending: deque = deque()  # rows (tuples) and _Ops, in order; the writer takes from the left
        self._wake = threading.Event()  # the writer waits on it
        self._idle = False  # the writer waits for a first row: a plain row wakes it
        self._rush = False  # something queued must be written now (a durable row, a job, a flush)
        self._room = threading.Condition(threading.Lock())  # producers wait here above MAX_PENDING

    def __repr__(self) -> str:
        return f"<Journal {self.path}{'' if self.enabled else ' (off)'}>"

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """A connection to the file (made, with its tables, if new); JournalError if that is impossible."""
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():  # prompts can be sensitive: the file (and its -wal, -shm) is the user's
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in filter(str.strip, SCHEMA.split(";")):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            return conn
        except (OSError, sqlite3.Error) as e:
            if conn is not None:
                conn.close()
            raise JournalError(f"The journal {self.path} could not be opened ({e}).",
                               hint="Set SM_MAGIC_HOME to a writable folder, move a damaged file aside, or "
                                    "turn the journal off.") from e

    def _after_fork(self) -> None:
        """In a forked child the parent's writer thread and connections are not ours: start afresh."""
        if self._pid != os.getpid():
            self._writer, self._reader = None, None
            self._init_queue()
            self._lock, self._read_lock, self._write_lock = threading.Lock(), threading.Lock(), threading.Lock()
            self._pid = os.getpid()

    def _start(self) -> None:
        self._after_fork()
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                conn = self._connect()  # errors surface here, in the caller's thread
                self._writer = threading.Thread(target=self._run, args=(conn,), name="sm-magic-journal",
                                                daemon=True)
                self._writer.start()
                atexit.register(self.close)

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        if not self.path.exists():  # reading never creates the file (a journal that is off stays off)
            return []
        self._after_fork()
        self._sync()
        with self._read_lock:
            if self._reader is None:
                self._reader = self._connect()
                self._reader.row_factory = sqlite3.Row
            try:
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise JournalError(f"The journal {self.path} could not be read ({e}).",
                                   hint="If another program has it open, close it; a damaged file can be "
                                        "moved aside (a new one is made).") from e

    # -- writing -------------------------------------------------------------------------------
    def record_call(self, record: CallRecord, durable: bool = False) -> None:
        """Queue a finished call; the writer commits it in the background: at once, or within
        :data:`COMMIT_DELAY` with the others when calls come in quick succession.
        ``durable``: return only once it is committed (a job's slow item: a kill -9 never loses it).

        Raises JournalError only if the file cannot be opened; later write failures are counted in
        ``dropped`` and reported by :meth:`flush`.
        """
        if not self.enabled:
            return
        if record.status not in STATUSES:
            raise ValueError(f"status {record.status!r} is not one of {sorted(STATUSES)}")
        prompt = record.prompt if isinstance(record.prompt, str) else json.dumps(record.prompt, default=str)
        row = (record.time, record.session, record.endpoint, record.region, record.handler, prompt,
               record.template, _json(record.params, "params"), _json(record.options, "options"), record.answer,
               _json(record.usage, "usage"), record.latency, record.first_token, record.status,
               record.error_class, record.error_message, record.job_id, record.item)
        now = time.monotonic()  # a call alone is written at once; calls in quick succession (a loop) share
        alone, self._last_call = now - self._last_call >= COMMIT_DELAY, now  # a transaction, as a job's do
        self._put(row, rush=alone)
        if durable:
            self.flush()

    def recorder(self, endpoint: str, *, handler: str | None = None, region: str | None = None,
                 params: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                 template: str | None = None, job_id: int | None = None) -> Callable[..., None]:
        """``record(prompt, status, answer, usage, latency, error_class, error_message, item, started,
        durable=False)`` for many calls that share everything else (a job's items): what they share is
        encoded once, so a row costs the caller a tuple and an append."""
        if not self.enabled:
            return lambda *args, **kwargs: None
        session, shared = session_id(), (_json(params, "params"), _json(options, "options"))

        def record(prompt: str, status: str, answer: str | None, usage: Mapping[str, Any] | None,
                   latency: float | None, error_class: str | None, error_message: str | None, item: int | None,
                   started: float, durable: bool = False) -> None:
            if status not in STATUSES:
                raise ValueError(f"status {status!r} is not one of {sorted(STATUSES)}")
            self._put((started, session, endpoint, region, handler, prompt, template, *shared, answer,
                       _json(usage, "usage"), latency, None, status, error_class, error_message, job_id, item))
            if durable:
                self.flush()

        return record

    def _put(self, item: Any, rush: bool = False, report: bool = True) -> None:
        """Queue a row or an op; ``rush``: the writer writes it now instead of waiting for others.
        ``report``: first raise if earlier rows could not be written (say so now, not never)."""
        if self._writer is None:  # also in a forked child (see _after_fork)
            self._start()
        if report and self.dropped > self._reported:
            self.flush()
        self._pending.append(item)
        if rush:
            self._rush = True
            self._wake.set()
        elif self._idle:
            self._wake.set()
        if len(self._pending) > MAX_PENDING:  # the writer is behind (a slow disk): wait for it
            self._rush = True
            self._wake.set()
            with self._room:
                while len(self._pending) > MAX_PENDING and self._writer is not None and self._writer.is_alive():
                    self._room.wait(0.05)

    def _submit(self, sql: str | None, args: tuple = ()) -> Any:
        op = _Op(sql, args)
        self._put(op, rush=True)
        return op.wait()

    def start_job(self, kind: str, endpoint: str | None, fingerprint: str | None, total: int | None,
                  meta: Mapping[str, Any] | None = None) -> int:
        """A new job's id (0 when the journal is off). The job row is on disk when this returns."""
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind {kind!r} is not one of {sorted(JOB_KINDS)}")
        if not self.enabled:
            return 0
        meta_json = json.dumps(dict(meta or {}), default=str)
        return self._submit("INSERT INTO jobs (kind, endpoint, fingerprint, total, created, session, meta) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (kind, endpoint, fingerprint, total, time.time(), session_id(), meta_json))

    def claim_job(self, job_id: int) -> None:
        """This process runs the job now (a resume): it is ``running`` again, and owned here."""
        if self.enabled and job_id:
            me = owner()
            self._submit("UPDATE jobs SET status = 'running', finished = NULL, meta = json_set(COALESCE(meta, "
                         "'{}'), '$.pid', ?, '$.host', ?, '$.started', ?) WHERE id = ?",
                         (me["pid"], me["host"], me["started"], job_id))

    def finish_job(self, job_id: int, status: str) -> None:
        """Mark a job finished (``ok``, ``partial``, ``error``, ``interrupted``...)."""
        if self.enabled and job_id:
            self._submit("UPDATE jobs SET status = ?, finished = ? WHERE id = ?", (status, time.time(), job_id))

    def record_submission(self, submission: Submission) -> None:
        """Remember where an async item's answer will appear (written with the calls, in order)."""
        if not self.enabled:
            return
        s = submission
        self._put(_Op("INSERT OR REPLACE INTO submissions VALUES (?, ?, ?, ?, ?, ?)",
                            (s.job_id, s.item, s.time, s.inference_id, s.output_location, s.failure_location)))

    def flush(self) -> None:
        """Return once everything recorded before this call is committed; raise if some of it could not be."""
        self._sync()
        if self.dropped > self._reported:
            lost, self._reported = self.dropped - self._reported, self.dropped
            raise JournalError(f"{lost} call(s) could not be written to the journal {self.path} "
                               f"({self.last_error}).",
                               hint="The calls themselves succeeded; check the disk and that no other "
                                    "program holds the file locked.")

    def _sync(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            op = _Op(None)
            self._put(op, rush=True, report=False)
            op.wait()

    def close(self) -> None:
        """Commit what is queued and close the file. The journal reopens if used again."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None and writer.is_alive():
            self._pending.append(_STOP)
            self._rush = True
            self._wake.set()
            writer.join()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        atexit.unregister(self.close)

    def _run(self, conn: sqlite3.Connection) -> None:
        """The writer: wait for a first row, give others :data:`COMMIT_DELAY` to join it (unless something
        is in a rush), write what is queued in one transaction; again."""
        pending, wake = self._pending, self._wake
        try:
            while True:
                self._idle = True
                if not pending:
                    wake.wait()
                self._idle = False
                wake.clear()
                if not self._rush:
                    wake.wait(COMMIT_DELAY)
                self._rush = False
                wake.clear()
                batch = [pending.popleft() for _ in range(min(len(pending), MAX_BATCH))]
                self._rush = self._rush or len(pending) >= MAX_BATCH  # behind: no waiting for the next one
                stop = any(item is _STOP for item in batch)
                if batch:
                    with self._write_lock:
                        self._write(conn, [item for item in batch if item is not _STOP])
                with self._room:
                    self._room.notify_all()
                if stop:
                    return
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list) -> None:
        ops = [item for item in batch if isinstance(item, _Op)]
        refused: list[BaseException] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                try:
                    self._execute(conn, batch)
                except _BAD_ROW:  # a lone surrogate (stored with U+FFFD), or one bad row: the others are kept
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    refused = self._execute_each(conn, batch)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as e:  # the writer must outlive any failure, or record_call would wait forever
            self.dropped += sum(1 for item in batch if isinstance(item, tuple))
            self.last_error = e
            error = JournalError(f"The journal {self.path} could not be written ({e}).")
            for op in ops:
                op.finish(None if op.sql is None else error)
            return
        if refused:  # said by the next record, as any write that failed
            self.dropped += len(refused)
            self.last_error = refused[-1]
        for op in ops:
            op.finish()

    def _execute(self, conn: sqlite3.Connection, batch: list) -> None:
        """Consecutive calls go in one executemany; other statements run in their place."""
        rows: list[tuple] = []
        for item in [*batch, None]:
            if isinstance(item, tuple):
                rows.append(item)
                continue
            if rows:
                conn.executemany(INSERT_CALL, rows)  # a lone surrogate raises UnicodeEncodeError: see _write
                rows = []
            if isinstance(item, _Op) and item.sql is not None:
                item.result = conn.execute(item.sql, item.args).lastrowid

    def _execute_each(self, conn: sqlite3.Connection, batch: list) -> list[BaseException]:
        """Row by row, surrogates replaced; what SQLite refused of single rows (their group is kept)."""
        refused = []
        for item in batch:
            if isinstance(item, tuple):
                try:
                    conn.execute(INSERT_CALL, _clean(item))
                except _BAD_ROW as e:
                    refused.append(e)
            elif isinstance(item, _Op) and item.sql is not None:
                item.result = conn.execute(item.sql, item.args).lastrowid
        return refused

    # -- reading -------------------------------------------------------------------------------
    def history(self, *, session: str | None = None, endpoint: str | None = None, status: str | None = None,
                text: str | None = None, job_id: int | None = None, limit: int = 50) -> list[CallRecord]:
        """Calls, newest first. ``session=None`` means every kernel; pass :func:`session_id` for this one.

        ``text`` is a case-insensitive substring of the prompt or the answer.
        """
        where, args = [], []
        for column, value in (("session", session), ("endpoint", endpoint), ("status", status),
                              ("job_id", job_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(prompt LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')")
            args += [pattern, pattern]
        sql = "SELECT * FROM calls" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._read(sql + " ORDER BY id DESC LIMIT ?", (*args, int(limit)))
        return [call_from_row(row, JSON_COLUMNS) for row in rows]

    def find_job(self, fingerprint: str) -> JobInfo | None:
        """The latest job with this fingerprint (any kernel), or None."""
        rows = self._read(_JOBS + " WHERE fingerprint = ? ORDER BY id DESC LIMIT 1", (fingerprint,))
        return job_from_row(rows[0]) if rows else None

    def job(self, job_id: int) -> JobInfo | None:
        rows = self._read(_JOBS + " WHERE id = ?", (job_id,))
        return job_from_row(rows[0]) if rows else None

    def jobs(self, limit: int = 20) -> list[JobInfo]:
        """Jobs, newest first, with their done/failed counts."""
        return [job_from_row(row) for row in self._read(_JOBS + " ORDER BY id DESC LIMIT ?", (int(limit),))]

    def finished_items(self, job_id: int) -> dict[int, CallRecord]:
        """Item index → its latest ok call, for the items of a job that have one."""
        rows = self._read("SELECT * FROM calls WHERE job_id = ? AND status = 'ok' ORDER BY id", (job_id,))
        return {row["item"]: call_from_row(row, JSON_COLUMNS) for row in rows}

    def submissions(self, job_id: int) -> dict[int, Submission]:
        """Item index → where its async answer will appear."""
        rows = self._read("SELECT * FROM submissions WHERE job_id = ? ORDER BY item", (job_id,))
        return {row["item"]: Submission(**dict(row)) for row in rows}


def _wal(conn: sqlite3.Connection) -> None:
    """WAL mode. Switching a new file to it needs the file to itself, and SQLite answers "locked" at once
    (not after the busy timeout) while another process holds it: so wait here, up to BUSY_TIMEOUT."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _before_fork() -> None:
    """No transaction open across a fork: SQLite's lock bookkeeping, copied into the child mid-transaction,
    made the child's own connection wait out the busy timeout and drop its rows."""
    _HELD[:] = list(_OPEN)
    for journal in _HELD:
        journal._write_lock.acquire()
        journal._read_lock.acquire()


def _after_fork_in_parent() -> None:
    for journal in _HELD:
        journal._read_lock.release()
        journal._write_lock.release()
    _HELD.clear()


def _after_fork_in_child() -> None:
    _HELD.clear()
    for journal in list(_OPEN):
        journal._after_fork()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


_JOBS = """SELECT jobs.*,
  (SELECT COUNT(DISTINCT item) FROM calls WHERE job_id = jobs.id AND status = 'ok') AS done,
  (SELECT COUNT(DISTINCT item) FROM calls c WHERE c.job_id = jobs.id AND c.status != 'ok' AND NOT EXISTS
     (SELECT 1 FROM calls o WHERE o.job_id = jobs.id AND o.item = c.item AND o.status = 'ok')) AS failed
FROM jobs"""


def _clean(row: tuple) -> tuple:
    """The row with each lone surrogate stored as one U+FFFD (as the views show it)."""
    return tuple(printable(v) if isinstance(v, str) else v for v in row)
