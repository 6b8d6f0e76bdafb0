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

import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sm_magic.errors import ConfigError, CredentialsError, SageMakerError, translate
from sm_magic.options import InvokeOptions
from sm_magic.params import BY_NAME
from sm_magic.records import Submission
from sm_magic.result import Request
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
    from sm_magic.endpoints import endpoint_and_config

    return endpoint_and_config(session, endpoint)[1].get("AsyncInferenceConfig")


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


def s3_error(error: BaseException, action: str, uri: str, endpoint: str | None = None) -> SageMakerError:
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
        raise s3_error(e, "s3:PutObject", location, request.endpoint) from e
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
