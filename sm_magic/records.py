"""What the journal holds, as records: calls, jobs, async submissions; the sm_magic home; kernel ids; job
fingerprints. Plain data and pure functions (the writer and the queries are in :mod:`sm_magic.journal`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sm_magic.errors import SageMakerError


class JournalError(SageMakerError):
    """The journal could not be written or read (locked by another program, disk full, damaged file)."""


def home() -> Path:
    """The sm_magic home: ``$SM_MAGIC_HOME``, else ``~/.sm_magic``."""
    return Path(os.environ.get("SM_MAGIC_HOME") or "~/.sm_magic").expanduser()


_session: str | None = None


def session_id() -> str:
    """This kernel's id (from its connection file) when running in a Jupyter kernel, else a uuid per process."""
    global _session
    if _session is None:
        _session = _kernel_id() or uuid.uuid4().hex
    return _session


def _forget_session() -> None:
    global _session
    _session = None


os.register_at_fork(after_in_child=_forget_session)  # a forked child finds its own id


def _kernel_id() -> str | None:
    if "ipykernel" not in sys.modules:
        return None
    try:
        from ipykernel import get_connection_file

        name = Path(get_connection_file()).name
    except Exception:  # not in a kernel (ipykernel imported by a plain shell, or no app yet)
        return None
    match = re.fullmatch(r"kernel-(.+)\.json", name)
    return match.group(1) if match else None


def fingerprint(endpoint: str, template: str | None, params: Mapping[str, Any] | None,
                options: Mapping[str, Any] | None, items: Iterable[Any]) -> str:
    """A hex digest of what decides a job's answers; items are hashed one by one, in order.

    Strings are hashed as length-prefixed UTF-8 (no JSON), so 100,000 prompts cost tens of milliseconds.
    """
    digest = hashlib.sha256()
    head = [endpoint, template, dict(params or {}), dict(options or {})]
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    count = 0
    for item in items:
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogatepass")
            digest.update(b"s%d:" % len(data))
        else:
            data = json.dumps(item, sort_keys=True, default=str).encode()
            digest.update(b"j%d:" % len(data))
        digest.update(data)
        count += 1
    digest.update(b"n%d" % count)
    return digest.hexdigest()


@dataclass(slots=True)
class CallRecord:
    """One finished call. Rows read back have ``id`` set; ``time`` is when the call started (epoch s)."""

    endpoint: str
    prompt: str
    status: str = "ok"  # ok | error | interrupted | truncated | partial
    answer: str | None = None
    handler: str | None = None
    region: str | None = None
    params: Mapping[str, Any] | None = None
    options: Mapping[str, Any] | None = None  # invoke options (custom attributes, variant...), never settings
    usage: Mapping[str, Any] | None = None
    latency: float | None = None  # seconds, request sent → last byte
    first_token: float | None = None  # seconds to the first streamed token
    error_class: str | None = None
    error_message: str | None = None
    job_id: int | None = None
    item: int | None = None  # the item's index in its job
    template: str | None = None  # the prompt before {var} filling
    time: float = field(default_factory=time.time)
    session: str = field(default_factory=session_id)
    id: int | None = None

    def row(self) -> dict[str, Any]:
        """A short summary for tables (the prompt and answer cut to 80 characters)."""
        def head(text: str | None) -> str:
            text = (text or "").replace("\n", " ")
            return text[:80] + ("…" if len(text) > 80 else "")

        return {"id": self.id, "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time)),
                "endpoint": self.endpoint, "status": self.status, "prompt": head(self.prompt),
                "answer": head(self.answer if self.status == "ok" else self.error_message),
                "latency_ms": None if self.latency is None else round(self.latency * 1000),
                "tokens": (self.usage or {}).get("completion_tokens"), "job": self.job_id, "item": self.item}


@dataclass
class JobInfo:
    """A job and how far it got: ``done`` items with an ok answer, ``failed`` items whose last call failed."""

    id: int
    kind: str
    endpoint: str | None
    fingerprint: str | None
    total: int | None
    created: float
    status: str
    session: str | None
    meta: dict[str, Any]
    finished: float | None = None
    done: int = 0
    failed: int = 0

    @property
    def owner_alive(self) -> bool | None:
        """Whether the process running this job is alive; None when that cannot be known (the job is
        not running, was started on another machine or before owners were recorded)."""
        pid = self.meta.get("pid")
        if self.status != "running" or not pid or self.meta.get("host") != socket.gethostname():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        found = _process(pid)  # a killed kernel not yet reaped, or its pid given to a new process, is gone
        return found is None or (found[0] != "Z" and self.meta.get("started") in (None, found[1]))

    @property
    def running_elsewhere(self) -> bool:
        """Still being run by another live process (kernel) on this machine."""
        return bool(self.owner_alive) and self.meta.get("pid") != os.getpid()

    def row(self) -> dict[str, Any]:
        status = "stopped (its kernel is gone)" if self.owner_alive is False else self.status
        return {"job": self.id, "kind": self.kind, "endpoint": self.endpoint, "done": self.done,
                "failed": self.failed, "total": self.total,
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created)), "status": status}


def owner() -> dict[str, Any]:
    """Who runs a job: this process on this machine (kept in the job's meta; see JobInfo.owner_alive)."""
    me = _process(os.getpid())
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": me[1] if me else None}


def _process(pid: int) -> tuple[str, int] | None:
    """A process's state and start time (clock ticks since boot), from /proc; None where there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # the name, in parentheses, may hold spaces
        return fields[0].decode(), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Submission:
    """An async item sent to the endpoint: where its answer (or failure) will appear in S3."""

    job_id: int
    item: int
    time: float
    inference_id: str | None = None
    output_location: str | None = None
    failure_location: str | None = None


def call_from_row(row: Any, json_columns: tuple[str, ...]) -> CallRecord:
    """A journal row (sqlite3.Row) as a CallRecord, its JSON columns parsed."""
    values = dict(row)
    for name in json_columns:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return CallRecord(**values)


def job_from_row(row: Any) -> JobInfo:
    """A jobs row (with its done/failed counts) as a JobInfo."""
    values = dict(row)
    values["meta"] = json.loads(values["meta"] or "{}")
    return JobInfo(**values)
