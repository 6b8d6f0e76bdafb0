"""Many async requests at once: a pool submits them, one thread collects every pending answer from S3.

:class:`AsyncRun` gives a Future per item (the runner's async jobs use it); :func:`submit` is the
Python API for one call. Polling starts at :data:`~sm_magic.async_.FIRST_POLL` and grows while nothing
arrives; three or more answers pending in one folder are found with one listing instead of a read each.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sm_magic.async_ import (
    ASYNC_BODY_LIMIT,
    LIST_MIN,
    READERS,
    AsyncSettings,
    AsyncStopped,
    AsyncTimeout,
    check_options,
    failure_error,
    input_prefix,
    s3_client,
    s3_error,
    send,
    split_uri,
)
from sm_magic.errors import SageMakerError, translate
from sm_magic.handlers.base import ContentHandler, Prompt
from sm_magic.options import InvokeOptions
from sm_magic.records import Submission
from sm_magic.result import Request, Result
from sm_magic.session import Session


# -- waiting for many answers at once --------------------------------------------------------------------
@dataclass
class Waiting:
    """An item whose answer is not collected yet."""

    key: Any
    endpoint: str
    submission: Submission
    handler: ContentHandler
    params: dict[str, Any]
    request: Request | None
    future: Future
    deadline: float  # time.monotonic()
    started: float = field(default_factory=time.perf_counter)


class AsyncRun:
    """Submits requests on a pool and collects every pending answer on one thread; a Future per item.

    ``on_submitted(key, submission)`` and ``on_done(key, outcome, waiting)`` are called from the
    run's threads as each request is queued and each answer (a Result) or error arrives.
    """

    def __init__(self, session: Session, settings: AsyncSettings | None = None, workers: int = 8,
                 on_submitted: Callable[[Any, Submission], None] | None = None,
                 on_done: Callable[[Any, Any, Waiting], None] | None = None):
        self.session = session
        self.settings = settings or AsyncSettings()
        self.on_submitted = on_submitted
        self.on_done = on_done
        self.s3 = s3_client(session)
        self.requests = 0  # S3 requests made while waiting (listings and reads)
        self.collected = 0
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="sm-magic-async-submit")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="sm-magic-async-read")
        self._prefixes: dict[str, str] = {}
        self._pending: dict[Any, Waiting] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- submitting ---------------------------------------------------------------------------------
    def submit(self, key: Any, endpoint: str, prompt: Prompt, handler: ContentHandler, params: dict[str, Any],
               options: InvokeOptions | None = None, inference: str | None = None) -> Future:
        """Queue one request (built by the handler, as a real-time call would be); its Future gets the Result."""
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self._pool.submit(self._send, key, endpoint, prompt, handler, params, options or InvokeOptions(),
                          inference or f"sm-magic-{uuid.uuid4().hex}", future)
        return future

    def _send(self, key: Any, endpoint: str, prompt: Prompt, handler: ContentHandler, params: dict[str, Any],
              options: InvokeOptions, inference: str, future: Future) -> None:
        from sm_magic.calls import build_request

        started = time.perf_counter()
        try:
            if self._stop.is_set():
                raise AsyncStopped("The run was stopped before this request was sent.", endpoint=endpoint)
            check_options(options)
            request = build_request(endpoint, prompt, handler, params, options, limit=ASYNC_BODY_LIMIT)
            prefix = self._prefix(endpoint)
            submission = send(self.session, self.s3, request, self.settings, inference, prefix)
            if self.on_submitted is not None:
                self.on_submitted(key, submission)
        except SageMakerError as e:
            self._finish(Waiting(key, endpoint, Submission(0, 0, time.time()), handler, params, None, future, 0.0,
                                 started), e)
            return
        except Exception as e:  # a bug or an unexpected failure: still the project's error type
            self._finish(Waiting(key, endpoint, Submission(0, 0, time.time()), handler, params, None, future, 0.0,
                                 started), translate(e, endpoint=endpoint))
            return
        self._add(Waiting(key, endpoint, submission, handler, params, request, future,
                          time.monotonic() + self.settings.max_wait, started))

    def _prefix(self, endpoint: str) -> str:
        with self._lock:
            if endpoint in self._prefixes:
                return self._prefixes[endpoint]
        prefix = input_prefix(self.session, endpoint, self.settings.s3_input)
        with self._lock:
            self._prefixes[endpoint] = prefix
        return prefix

    def collect(self, key: Any, endpoint: str, submission: Submission, handler: ContentHandler,
                params: dict[str, Any] | None = None) -> Future:
        """Wait for an answer submitted earlier (by another kernel, maybe): nothing is sent again."""
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self._add(Waiting(key, endpoint, submission, handler, params or {}, None, future,
                          time.monotonic() + self.settings.max_wait))
        return future

    # -- collecting ---------------------------------------------------------------------------------
    def _add(self, waiting: Waiting) -> None:
        with self._lock:
            self._pending[waiting.key] = waiting
            if self._stop.is_set():
                pass
            elif self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sm-magic-async-collect", daemon=True)
                self._thread.start()
        if self._stop.is_set():
            self._finish(waiting, self._stopped(waiting))

    def _loop(self) -> None:
        interval = self.settings.first_poll
        while not self._stop.wait(interval):
            with self._lock:
                waiting = list(self._pending.values())
                if not waiting:
                    self._thread = None
                    return
            try:
                found = self._round(waiting)
            except RuntimeError:  # closed while reading: what is left gets the stop error
                return
            now = time.monotonic()
            for w in waiting:
                if w.key in self._pending and now > w.deadline and w.key not in found:
                    self._finish(w, AsyncTimeout(
                        f"No answer from endpoint '{w.endpoint}' appeared at {w.submission.output_location} within "
                        f"{self.settings.max_wait:g} s (inference {w.submission.inference_id}).",
                        endpoint=w.endpoint, location=w.submission.output_location or "",
                        hint="It may still be queued or running: `%sagemaker resume JOB` collects it later without "
                             "sending it again (`%sagemaker jobs` lists jobs); raise --max-wait to wait longer."))
            interval = self.settings.first_poll if found else min(self.settings.max_poll,
                                                                   interval * self.settings.poll_factor)

    def _round(self, waiting: list[Waiting]) -> set[Any]:
        """Look once for every pending answer; finish those found. Returns their keys."""
        found: set[Any] = set()
        for kind in ("output", "failure"):
            todo = [w for w in waiting if w.key not in found]
            folders: dict[tuple[str, str], list[tuple[str, Waiting]]] = {}
            for w in todo:
                uri = w.submission.output_location if kind == "output" else w.submission.failure_location
                if not uri:
                    continue
                bucket, key = split_uri(uri)
                folders.setdefault((bucket, key.rpartition("/")[0]), []).append((key, w))
            for (bucket, _), items in folders.items():
                try:
                    if len(items) >= LIST_MIN:
                        present = self._listed(bucket, sorted(k for k, _ in items))
                        hits = [(k, w) for k, w in items if k in present]
                    else:
                        hits = items
                    bodies = self._readers.map(lambda hit, b=bucket: self._read(b, hit[0]), hits)
                    for (key, w), body in zip(hits, bodies, strict=True):  # read READERS at a time
                        if body is not None:
                            found.add(w.key)
                            self._arrived(w, kind, body, f"s3://{bucket}/{key}")
                except SageMakerError as e:  # S3 refused: every item waiting there fails with the reason
                    for _, w in items:
                        found.add(w.key)
                        self._finish(w, e)
        return found

    def _listed(self, bucket: str, keys: list[str]) -> set[str]:
        """Which of ``keys`` exist: one ListObjectsV2 page per 1,000 keys in the range they span."""
        prefix = os.path.commonprefix(keys)  # noqa: RUF071 (S3 prefixes are character prefixes)
        present: set[str] = set()
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        before = _just_before(keys[0])
        if before > prefix:
            kwargs["StartAfter"] = before
        while True:
            self.requests += 1
            try:
                page = self.s3.list_objects_v2(**kwargs)
            except Exception as e:
                raise s3_error(e, "s3:ListBucket", f"s3://{bucket}/{prefix}") from e
            contents = page.get("Contents") or []
            present.update(item["Key"] for item in contents)
            if not page.get("IsTruncated") or (contents and contents[-1]["Key"] >= keys[-1]):
                return present
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _read(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes; None when it is not there (yet)."""
        from botocore.exceptions import ClientError

        with self._lock:
            self.requests += 1
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise s3_error(e, "s3:GetObject", f"s3://{bucket}/{key}") from e
        except Exception as e:
            raise s3_error(e, "s3:GetObject", f"s3://{bucket}/{key}") from e

    def _arrived(self, w: Waiting, kind: str, body: bytes, uri: str) -> None:
        from sm_magic.calls import _decode

        if kind == "failure":
            self._finish(w, failure_error(body.decode("utf-8", "replace"), w.endpoint, uri,
                                          w.submission.inference_id))
            return
        try:
            out = _decode(w.handler, body, w.endpoint)
        except SageMakerError as e:
            self._finish(w, e)
            return
        self._finish(w, Result(out.text, w.endpoint, w.handler.name, latency=time.perf_counter() - w.started,
                               usage=out.usage, params=w.params, request=w.request, body=body, data=out.data))

    def _finish(self, w: Waiting, outcome: Any) -> None:
        with self._lock:
            if self._pending.get(w.key) is w:
                del self._pending[w.key]
        if isinstance(outcome, Result):
            self.collected += 1
        if self.on_done is not None:
            with contextlib.suppress(Exception):  # recording must never cost the answer
                self.on_done(w.key, outcome, w)
        if not w.future.done():
            (w.future.set_result if isinstance(outcome, Result) else w.future.set_exception)(outcome)

    def _stopped(self, w: Waiting) -> AsyncStopped:
        return AsyncStopped(f"Stopped waiting for inference {w.submission.inference_id} of endpoint '{w.endpoint}'.",
                          endpoint=w.endpoint, location=w.submission.output_location or "",
                          hint="It stays queued or running on the endpoint: `%sagemaker resume JOB` collects it "
                               "later without sending it again.")

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Stop submitting and waiting; what is still pending fails with a 'resume later' error."""
        self._stop.set()
        self._pool.shutdown(wait=True)  # unsent requests see the stop and fail
        self._readers.shutdown(wait=False)
        with self._lock:
            left = list(self._pending.values())
        for w in left:
            self._finish(w, self._stopped(w))


def _just_before(key: str) -> str:
    """A key sorting right before ``key`` (ListObjectsV2's StartAfter is exclusive)."""
    if not key:
        return ""
    last = key[-1]
    return key[:-1] + chr(ord(last) - 1) + "\U0010ffff" if ord(last) > 0 else key[:-1]


# -- the Python API -------------------------------------------------------------------------------------
_runs: weakref.WeakKeyDictionary[Session, AsyncRun] = weakref.WeakKeyDictionary()
_runs_lock = threading.Lock()


class AsyncCall(Future):
    """A submitted request: ``.result(timeout)`` waits for the answer (a :class:`Result`)."""

    def __init__(self, endpoint: str, inner: Future):
        super().__init__()
        self.endpoint = endpoint
        self._inner = inner
        self.set_running_or_notify_cancel()
        inner.add_done_callback(self._copy)

    def _copy(self, inner: Future) -> None:
        error = inner.exception()
        self.set_exception(error) if error is not None else self.set_result(inner.result())


def submit(endpoint: str, prompt: Prompt, *, session: Session | None = None, handler: Any = "auto",
           params: dict[str, Any] | None = None, options: InvokeOptions | None = None, s3_input: str | None = None,
           request_ttl: int | None = None, invocation_timeout: int | None = None,
           max_wait: float | None = None) -> AsyncCall:
    """Send ``prompt`` to an async endpoint; returns at once with a Future of its :class:`Result`.

    >>> answer = sm_magic.submit("my-async-endpoint", "Summarize ...", handler="tgi")
    >>> answer.result().text
    """
    from sm_magic.handlers.base import adapt
    from sm_magic.handlers.registry import Registry
    from sm_magic.resolve import session_from_environment

    session = session or session_from_environment()
    if isinstance(handler, str):
        if handler == "auto":
            from sm_magic.handlers.detect import detect

            handler = detect(session.sagemaker, endpoint).handler
        content_handler = Registry().get(handler)
    else:
        content_handler = adapt(handler)
    settings = AsyncSettings.from_values({"s3_input": s3_input, "request_ttl": request_ttl,
                                          "invocation_timeout": invocation_timeout, "max_wait": max_wait})
    with _runs_lock:
        run = _runs.get(session)
        if run is None or run.settings != settings:
            run = _runs[session] = AsyncRun(session, settings)
    key = object()
    return AsyncCall(endpoint, run.submit(key, endpoint, prompt, content_handler, params or {}, options))
