"""Asynchronous inference: the request body goes to S3, ``InvokeEndpointAsync`` queues it, the answer
(or the failure) is collected from S3 — by this kernel, or by another one the next day.

:class:`AsyncRun` is the machinery: a pool submits (upload, then ``invoke_endpoint_async``), one
collector thread waits for every pending answer at once, and each item gets a
:class:`~concurrent.futures.Future`. The collector polls with a short interval that grows while nothing
arrives (:data:`FIRST_POLL` × :data:`POLL_FACTOR` up to :data:`MAX_POLL`, back to the start when something
does): one or two pending items are read with GetObject (a miss costs a 404, a hit is the answer), three
or more sharing a folder are found with one ListObjectsV2 per round. Answers are decoded by the same
content handler as a real-time call.

:func:`submit` is the Python API (a Future per call); the runner uses :class:`AsyncRun` for
``%%sagemaker --async`` and journals each :class:`~sm_magic.journal.Submission`, so ``%sagemaker resume
JOB`` collects the answers without invoking again.
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
from urllib.parse import urlsplit

from sm_magic.errors import ConfigError, CredentialsError, SageMakerError, translate
from sm_magic.handlers.base import ContentHandler, Prompt
from sm_magic.journal import Submission
from sm_magic.options import InvokeOptions
from sm_magic.params import BY_NAME
from sm_magic.result import Request, Result
from sm_magic.session import Session

FIRST_POLL = 0.05  # seconds before the first look for an answer
POLL_FACTOR = 1.5  # the interval grows by this while nothing arrives
MAX_POLL = 1.0  # ... up to this (the median wait after an answer is written is about half of it)
READERS = 8  # answers read from S3 at once
LIST_MIN = 3  # pending answers in one folder from which one listing is cheaper than a GetObject each
INPUT_FOLDER = "sm-magic/async-inputs"  # under the bucket of the endpoint's S3OutputPath, by default
ASYNC_OPTIONS = ("custom_attributes", "inference_id")  # the invoke options InvokeEndpointAsync takes

ASYNC_BODY_LIMIT = 1024**3  # asynchronous inference takes bodies up to 1 GB from S3


# -- errors -------------------------------------------------------------------------------------------
class AsyncError(SageMakerError):
    """An asynchronous request did not give an answer."""

    def __init__(self, message: str, *, endpoint: str | None = None, hint: str = "", location: str = ""):
        super().__init__(message, endpoint=endpoint, hint=hint)
        self.location = location  # the S3 object the error is about


class AsyncFailed(AsyncError):
    """The endpoint wrote a failure object: ``content`` is the container's (or SageMaker's) message."""

    def __init__(self, message: str, *, endpoint: str | None = None, hint: str = "", location: str = "",
                 content: str = ""):
        super().__init__(message, endpoint=endpoint, hint=hint, location=location)
        self.content = content


class RequestExpired(AsyncFailed):
    """The request waited in the endpoint's queue longer than its RequestTTLSeconds."""


class AsyncTimeout(AsyncError):
    """No answer appeared within ``max_wait``; the request may still be queued or running."""

    retryable = True


class AsyncStopped(AsyncError):
    """This kernel stopped waiting (Ctrl-C, or the run was closed); the request may still be answered."""


class S3AccessDenied(CredentialsError):
    """S3 refused an action the async path needs (named with its bucket)."""


# -- settings and small helpers --------------------------------------------------------------------------
@dataclass
class AsyncSettings:
    """How async calls are sent and waited for (from the ``async`` rows of the parameter table)."""

    s3_input: str | None = None
    request_ttl: int | None = None
    invocation_timeout: int | None = None
    max_wait: float = BY_NAME["max_wait"].default
    first_poll: float = FIRST_POLL
    max_poll: float = MAX_POLL
    poll_factor: float = POLL_FACTOR

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> AsyncSettings:
        chosen = {k: values[k] for k in ("s3_input", "request_ttl", "invocation_timeout", "max_wait")
                  if values.get(k) is not None}
        for name, value in chosen.items():
            BY_NAME[name].check(value)
        return cls(**chosen)

    def meta(self) -> dict[str, Any]:
        """What a job keeps, so that ``resume`` waits the same way."""
        return {"s3_input": self.s3_input, "request_ttl": self.request_ttl,
                "invocation_timeout": self.invocation_timeout, "max_wait": self.max_wait}


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); a clear error for anything else."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"{uri!r} is not an S3 location; write it as s3://bucket/prefix.")
    return parts.netloc, parts.path.lstrip("/")


def new_token() -> str:
    """A short id shared by a job's inference ids (so its answers sort together in S3)."""
    return uuid.uuid4().hex[:12]


def inference_id(token: str, item: int) -> str:
    return f"sm-magic-{token}-{item:06d}"


_s3_clients: weakref.WeakKeyDictionary[Session, Any] = weakref.WeakKeyDictionary()
_s3_lock = threading.Lock()


def s3_client(session: Session) -> Any:
    """An S3 client with the session's credentials and timeouts (one per session).

    Where S3 is comes from boto3's own configuration (``AWS_ENDPOINT_URL_S3`` or the config file's
    ``services`` section; moto's server in tests); a configured URL is addressed path-style.
    """
    with _s3_lock:
        client = _s3_clients.get(session)
        if client is None:
            from botocore.config import Config

            s = session.settings
            custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            config = Config(read_timeout=s.read_timeout, connect_timeout=s.connect_timeout,
                            retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
                            max_pool_connections=s.max_pool_connections, user_agent_extra="sm-magic/0.1",
                            s3={"addressing_style": "path"} if custom else None)
            try:
                client = session.boto_session.client("s3", region_name=session.region, config=config)
            except Exception as e:
                raise translate(e) from e
            _s3_clients[session] = client
        return client


def async_inference_config(session: Session, endpoint: str) -> dict[str, Any] | None:
    """The endpoint's ``AsyncInferenceConfig`` (DescribeEndpointConfig), or None for a real-time endpoint."""
    sm = session.sagemaker
    try:
        described = sm.describe_endpoint(EndpointName=endpoint)
        config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    except Exception as e:
        raise translate(e, endpoint=endpoint, region=session.region) from e
    return config.get("AsyncInferenceConfig")


def input_prefix(session: Session, endpoint: str, s3_input: str | None) -> str:
    """Where request bodies go: ``--s3-input``, else a folder in the bucket of the endpoint's S3OutputPath."""
    if s3_input:
        bucket, key = split_uri(s3_input)
        return f"s3://{bucket}/{key.strip('/')}".rstrip("/")
    config = async_inference_config(session, endpoint)
    output = ((config or {}).get("OutputConfig") or {}).get("S3OutputPath")
    if not output:
        raise ConfigError(f"Endpoint '{endpoint}' has no async inference configuration to take an S3 bucket from.",
                          endpoint=endpoint, hint="Give one with --s3-input s3://bucket/prefix (the alias key "
                          "s3_input), or check that the endpoint is an asynchronous one.")
    bucket, _ = split_uri(output)
    return f"s3://{bucket}/{INPUT_FOLDER}/{endpoint}"


def _s3_error(error: BaseException, action: str, uri: str, endpoint: str | None = None) -> SageMakerError:
    """S3's refusal in the project's form: the action and the bucket, and what to do."""
    from botocore.exceptions import ClientError

    bucket = split_uri(uri)[0] if uri.startswith("s3://") else uri
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
            extra = (" (without s3:ListBucket, S3 also answers 403 for an answer that is not written yet)"
                     if action == "s3:GetObject" else "")
            return S3AccessDenied(
                f"S3 denied {action} on bucket '{bucket}' ({uri}).", endpoint=endpoint,
                hint=f"Allow {action} on arn:aws:s3:::{bucket}/* for the user or role of this session{extra}, "
                     "or use another location with --s3-input s3://bucket/prefix.")
        if code == "NoSuchBucket":
            return ConfigError(f"The S3 bucket '{bucket}' does not exist ({action} on {uri}).", endpoint=endpoint,
                               hint="Create it, or give an existing one with --s3-input s3://bucket/prefix.")
    return translate(error, endpoint=endpoint)


def failure_error(content: str, endpoint: str, location: str, inference: str | None) -> AsyncFailed:
    """A failure object's content as an error: expired TTLs and timeouts say what to change."""
    text = " ".join(content.split())[:1000] or "(empty failure object)"
    which = f" for inference {inference}" if inference else ""
    if "RequestExpired" in text or "expired" in text.lower():
        return RequestExpired(
            f"The request{which} to endpoint '{endpoint}' expired before it ran: {text}", endpoint=endpoint,
            location=location, content=content,
            hint="It waited in the endpoint's queue longer than its time to live: raise --request-ttl (up to "
                 "21600 s) or give the endpoint more instances, then run the cell again.")
    hint = ("The container took longer than --invocation-timeout allows: raise it (up to 3600 s) or ask for "
            "fewer tokens." if "InvocationTimeout" in text or "timed out" in text.lower() else
            "This is the endpoint's own message (also in its CloudWatch logs); fix the request or the "
            "container and run the cell again.")
    return AsyncFailed(f"Endpoint '{endpoint}' wrote a failure{which} to {location}: {text}", endpoint=endpoint,
                       location=location, content=content, hint=hint)


def check_options(options: InvokeOptions) -> None:
    """InvokeEndpointAsync takes custom attributes and an inference id, not the real-time routing headers."""
    extra = [BY_NAME[name].option for name in options.set() if name not in ASYNC_OPTIONS]
    if extra:
        raise ConfigError(f"{', '.join(extra)} cannot be used with asynchronous inference (InvokeEndpointAsync "
                          "has no such parameter); remove them or call a real-time endpoint.")


# -- one request ----------------------------------------------------------------------------------------
def send(session: Session, s3: Any, request: Request, settings: AsyncSettings, inference: str,
         prefix: str) -> Submission:
    """Upload the body under ``prefix`` and queue it; returns where the answer (or failure) will appear."""
    bucket, folder = split_uri(prefix)
    key = f"{folder}/{inference}.body".lstrip("/")
    location = f"s3://{bucket}/{key}"
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=request.body, ContentType=request.content_type)
    except Exception as e:
        raise _s3_error(e, "s3:PutObject", location, request.endpoint) from e
    kwargs: dict[str, Any] = {"EndpointName": request.endpoint, "InputLocation": location,
                              "ContentType": request.content_type, "Accept": request.accept,
                              "InferenceId": request.invoke_params.get("InferenceId") or inference}
    if request.invoke_params.get("CustomAttributes"):
        kwargs["CustomAttributes"] = request.invoke_params["CustomAttributes"]
    if settings.request_ttl:
        kwargs["RequestTTLSeconds"] = settings.request_ttl
    if settings.invocation_timeout:
        kwargs["InvocationTimeoutSeconds"] = settings.invocation_timeout
    try:
        response = session.runtime.invoke_endpoint_async(**kwargs)
    except Exception as e:
        raise translate(e, endpoint=request.endpoint, region=session.region) from e
    return Submission(0, 0, time.time(), response.get("InferenceId") or kwargs["InferenceId"],
                      response.get("OutputLocation"), response.get("FailureLocation"))


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
                raise _s3_error(e, "s3:ListBucket", f"s3://{bucket}/{prefix}") from e
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
            raise _s3_error(e, "s3:GetObject", f"s3://{bucket}/{key}") from e
        except Exception as e:
            raise _s3_error(e, "s3:GetObject", f"s3://{bucket}/{key}") from e

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
