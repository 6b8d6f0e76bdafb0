"""The runtime routes: InvokeEndpoint, InvokeEndpointWithResponseStream, and scripted fault playback.

Each served endpoint wraps a container format (request parsing, response shapes), a backend (tokens)
and a fault plan. :class:`Runtime` checks a call the way SageMaker's front door does, runs the model,
and writes the answer (or the fault) on the request's :class:`~sm_magic.local.http.Handler`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sm_magic.local import eventstream
from sm_magic.local.backends import Backend, make_backend
from sm_magic.local.config import EndpointSpec, ServerConfig
from sm_magic.local.containers import CONTAINERS, ContainerError, Generation, Usage
from sm_magic.local.faults import Fault, FaultPlan
from sm_magic.local.http import ApiError, Handler
from sm_magic.local.s3 import ObjectStore


class Capacity:
    """Calls in flight and calls per second an endpoint takes; beyond either, SageMaker's ThrottlingException.

    The rate is a token bucket holding at most one second of calls (at least one call).
    """

    def __init__(self, max_concurrency: int = 0, max_rps: float = 0.0):
        self.max_concurrency, self.max_rps = max_concurrency, max_rps
        self.in_flight = 0
        self._tokens, self._last = max(1.0, max_rps), time.monotonic()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one call's place for the duration of the block, or raise ThrottlingException (HTTP 400)."""
        with self._lock:
            if self.max_rps:
                now = time.monotonic()
                self._tokens = min(max(1.0, self.max_rps), self._tokens + (now - self._last) * self.max_rps)
                self._last = now
            if (self.max_rps and self._tokens < 1) or (self.max_concurrency and self.in_flight >= self.max_concurrency):
                raise ApiError(400, "ThrottlingException", "Rate exceeded")
            if self.max_rps:
                self._tokens -= 1
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


class ServedEndpoint:
    """Runtime state of one served endpoint."""

    def __init__(self, spec: EndpointSpec):
        self.spec = spec
        self.container = CONTAINERS[spec.format]
        self.backend: Backend = make_backend(spec.backend, spec.token_delay, spec.fill_to_max_tokens,
                                             embedding=getattr(self.container, "embeds", False))
        self.faults = FaultPlan(spec.faults)
        self.capacity = Capacity(spec.max_concurrency, spec.max_rps)


def fault_error(fault: Fault, model_error: ApiError) -> ApiError | None:
    """The error response a fault stands for (None: a fault played elsewhere, or ``latency``)."""
    kind = fault.kind
    if kind == "latency":
        time.sleep(fault.seconds)
        return None
    errors = {
        "throttle": (429, "ThrottlingException", "Rate exceeded"),
        "not-ready": (429, "ModelNotReadyException", "Model is not ready yet. Try again later."),
        "internal": (500, "InternalFailure", "An internal error occurred. Try again later."),
        "unavailable": (503, "ServiceUnavailable", "The service is unavailable. Try again later."),
        "dependency": (530, "InternalDependencyException",
                       "Your request caused an exception with an internal dependency."),
        "expired-token": (400, "ExpiredTokenException", "The security token included in the request is expired"),
    }
    if kind == "model-error":
        return model_error
    if kind in errors:
        return ApiError(*errors[kind])
    return None


def container_answer(container: str, error: ContainerError) -> tuple[int, str]:
    """The status and body a real container answers to a request it rejects (SageMaker passes both on)."""
    if container == "tgi":  # TGI's validation errors
        return error.status, json.dumps({"error": error.message, "error_type": "validation"})
    if container == "lmi":  # DJL Serving's ErrorResponse
        return 400, json.dumps({"code": 400, "type": "BadRequestException", "message": error.message})
    return error.status, error.message


@dataclass
class AsyncJob:
    """One queued InvokeEndpointAsync request."""

    ep: ServedEndpoint
    headers: dict[str, str]  # the container's view: content type and custom attributes
    input_location: str
    body: bytes | None  # inline Body, else read from input_location
    output_location: str
    failure_location: str
    ttl: int
    timeout: int
    queued: float = field(default_factory=time.monotonic)


class Runtime:
    """Invoke, stream and async inference for the served endpoints, as the SageMaker runtime answers them."""

    def __init__(self, config: ServerConfig, on_async: Callable[[str, str], None] = lambda name, outcome: None):
        self.config = config
        self.store = ObjectStore(config.s3_endpoint_url, config.region) if config.s3_endpoint_url else None
        self.on_async = on_async  # (endpoint, "succeeded" | "failed") when an async request finishes
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Stop the async workers; queued requests that have not started are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- checks and errors ---------------------------------------------------------------------
    def admit(self, ep: ServedEndpoint, headers: dict[str, str]) -> Fault | None:
        """Checks shared by the invoke routes; plays this call's fault (raising its error) and returns it."""
        check_lengths(headers)
        spec, name, account = ep.spec, ep.spec.name, self.config.account
        component = headers.get("x-amzn-sagemaker-inference-component")
        if spec.inference_components and not component:
            raise ApiError(
                400, "ValidationError",
                "Inference Component Name header is required for endpoints to which you plan to "
                "deploy inference components. Please include Inference Component Name header or "
                "consider using SageMaker models.",
            )
        if component and component not in spec.inference_components:
            raise ApiError(400, "ValidationError", f"Inference Component {component} not found.")
        variant = headers.get("x-amzn-sagemaker-target-variant")
        if variant and variant not in spec.variants:
            raise ApiError(
                400, "ValidationError", f"Target variant {variant} not found for endpoint {name} of account {account}."
            )
        if spec.status != "InService":
            raise ApiError(400, "ValidationError", f"Endpoint {name} is not in service: {spec.status}.")
        if spec.latency:
            time.sleep(spec.latency)
        fault = ep.faults.take()
        if fault is not None:
            error = fault_error(fault, self.model_error(name, fault.status, fault.message))
            if error is not None:
                raise error
        return fault

    def model_error(self, name: str, status: int, message: str) -> ApiError:
        """SageMaker's 424 for a container that answered ``status`` with body ``message``."""
        region, account = self.config.region, self.config.account
        side = "client" if 400 <= status < 500 else "server"
        return ApiError(
            424, "ModelError",
            f'Received {side} error ({status}) from primary with message "{message}". See '
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:"
            f"group=/aws/sagemaker/Endpoints/{name} in account {account} for more information.",
            OriginalStatusCode=status,
            OriginalMessage=message,
            LogStreamArn=f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/{name}",
            ErrorCode=f"{side.upper()}_ERROR_FROM_MODEL",
        )

    def generate(self, ep: ServedEndpoint, headers: dict[str, str],
                 body: bytes) -> tuple[Generation, Iterator[str], Usage]:
        """Parse the body as the container does and start the backend (tokens are produced lazily)."""
        try:
            gen = ep.container.parse(body, headers)
        except ContainerError as e:
            raise self.model_error(ep.spec.name, *container_answer(ep.container.name, e)) from None
        prompt = gen.prompt if gen.prompt is not None else json.dumps(gen.messages)
        usage = Usage(prompt_tokens=ep.backend.count_tokens(prompt))
        if ep.container.name == "embedding":
            return gen, iter(()), usage

        def counted() -> Iterator[str]:
            for token in ep.backend.generate(gen):
                usage.completion_tokens += 1
                yield token

        return gen, counted(), usage

    @staticmethod
    def response_headers(ep: ServedEndpoint, headers: dict[str, str]) -> dict[str, str]:
        variant = headers.get("x-amzn-sagemaker-target-variant") or ep.spec.variants[0]
        out = {"x-Amzn-Invoked-Production-Variant": variant}
        if "x-amzn-sagemaker-custom-attributes" in headers:
            out["X-Amzn-SageMaker-Custom-Attributes"] = headers["x-amzn-sagemaker-custom-attributes"]
        if headers.get("x-amzn-sagemaker-session-id") == "NEW_SESSION":
            expires = (datetime.now(UTC) + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
            out["X-Amzn-SageMaker-New-Session-Id"] = f"{uuid.uuid4()}; Expires={expires}"
        return out

    def answer(self, ep: ServedEndpoint, headers: dict[str, str], body: bytes,
               asynchronous: bool = False) -> tuple[bytes, Fault | None]:
        """The container's whole answer to one request (after the front door's checks and faults)."""
        if ep.spec.async_ and not asynchronous:
            raise ApiError(400, "ValidationError",
                           f"Endpoint {ep.spec.name} of account {self.config.account} is an asynchronous inference "
                           "endpoint: invoke it with InvokeEndpointAsync.")
        fault = self.admit(ep, headers)
        gen, tokens, usage = self.generate(ep, headers, body)
        text = "".join(tokens)
        finish = "length" if usage.completion_tokens >= gen.max_new_tokens else "stop"
        payload = ep.container.response(gen, text, usage, finish)
        if fault and fault.kind == "malformed":
            payload = ep.container.malformed()
        return payload, fault

    # -- routes --------------------------------------------------------------------------------
    def invoke(self, http: Handler, ep: ServedEndpoint, headers: dict[str, str], body: bytes) -> None:
        """``POST /endpoints/{name}/invocations``."""
        payload, fault = self.answer(ep, headers, body)
        out = {"Content-Type": "application/json", **self.response_headers(ep, headers)}
        if fault and fault.kind in ("reset", "drop"):
            http.drop(payload if fault.kind == "drop" else b"", out)
            return
        http.send(200, payload, out)

    def stream(self, http: Handler, ep: ServedEndpoint, headers: dict[str, str], body: bytes) -> None:
        """``POST /endpoints/{name}/invocations-response-stream``: PayloadPart events, faults mid-stream."""
        if ep.spec.async_:
            self.answer(ep, headers, body)  # raises: real-time calls to an async endpoint are refused
        fault = self.admit(ep, headers)
        gen, tokens, usage = self.generate(ep, headers, body)
        out = self.response_headers(ep, headers)
        if fault and fault.kind == "reset":
            http.drop()
            return
        http.start_chunks({"Content-Type": "application/vnd.amazon.eventstream",
                           "X-Amzn-SageMaker-Content-Type": ep.container.stream_content_type(gen), **out})
        lines = ep.container.stream(gen, tokens, usage)
        if fault and fault.kind == "malformed":
            lines = iter([ep.container.malformed()])
        parts = 0
        try:
            for data in slices(lines, ep.spec.part_size):
                if fault and parts >= fault.after_parts and self._stream_fault(http, ep, fault):
                    return
                http.chunk(eventstream.payload_part(data))
                parts += 1
            early = fault and parts < fault.after_parts and fault.kind != "malformed"
            if early and self._stream_fault(http, ep, fault):
                return
            http.end_chunks()
        except (BrokenPipeError, ConnectionResetError):
            http.close_connection = True
            if hasattr(lines, "close"):
                lines.close()

    def submit(self, http: Handler, ep: ServedEndpoint, headers: dict[str, str], body: bytes) -> None:
        """``POST /endpoints/{name}/async-invocations``: queue the request, answer 202 with its locations."""
        name, account = ep.spec.name, self.config.account
        if not ep.spec.async_:
            raise ApiError(400, "ValidationError",
                           f"Endpoint {name} of account {account} is not an asynchronous inference endpoint.")
        location = headers.get("x-amzn-sagemaker-inputlocation", "")
        if bool(location) == bool(body):
            raise ApiError(400, "ValidationError", "Provide exactly one of Body and InputLocation.")
        if self.store is None:
            raise ApiError(500, "InternalFailure", "The local endpoint has no S3 service (set s3_endpoint_url).")
        ttl = _bounded(headers, "RequestTTLSeconds", 21600, 21600)
        timeout = _bounded(headers, "InvocationTimeoutSeconds", 900, 3600)
        inference_id = headers.get("x-amzn-sagemaker-inference-id") or str(uuid.uuid4())
        extension = headers.get("x-amzn-sagemaker-s3outputpathextension", "").strip("/")
        filename = headers.get("x-amzn-sagemaker-filename") or f"{inference_id}.out"
        output = "/".join(p for p in (ep.spec.output_path, extension, filename) if p)
        failure = f"{ep.spec.failure_path}/{inference_id}-error.out"
        container_headers = {k: v for k, v in headers.items() if k == "x-amzn-sagemaker-custom-attributes"}
        container_headers["content-type"] = headers.get("x-amzn-sagemaker-content-type", "application/json")
        job = AsyncJob(ep, container_headers, location, None if location else body, output, failure, ttl, timeout)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.async_workers, thread_name_prefix="sm-magic-async")
            self._pool.submit(self._work, job)
        http.send(202, json.dumps({"InferenceId": inference_id}).encode(),
                  {"Content-Type": "application/json", "X-Amzn-SageMaker-OutputLocation": output,
                   "X-Amzn-SageMaker-FailureLocation": failure})

    def _work(self, job: AsyncJob) -> None:
        """Run one async request and write its output object, or its failure object."""
        assert self.store is not None
        name = job.ep.spec.name
        try:
            waited = time.monotonic() - job.queued
            if waited > job.ttl:
                raise ApiError(400, "RequestExpired",
                               f"Request expired: it waited {waited:.0f} s in the queue, longer than its "
                               f"RequestTTLSeconds ({job.ttl} s).")
            try:
                body = job.body if job.body is not None else self.store.read(job.input_location)
            except Exception as e:
                raise ApiError(400, "ValidationError", f"Could not read the input {job.input_location}: {e}") from None
            started = time.monotonic()
            payload, fault = self.answer(job.ep, job.headers, body, asynchronous=True)
            if fault and fault.kind in ("reset", "drop"):
                raise ApiError(500, "InternalFailure", "The model container closed the connection.")
            if time.monotonic() - started > job.timeout:
                raise ApiError(408, "InvocationTimeout",
                               f"Inference invocation timed out after {job.timeout} s (InvocationTimeoutSeconds).")
            self.store.write(job.output_location, payload, "application/json")
            self.on_async(name, "succeeded")
        except ApiError as error:
            text = error.message if error.code == "ModelError" else f"{error.code}: {error.message}"
            self._fail(job, text)
        except Exception as e:  # a bug or S3 trouble: still leave a failure object when possible
            self._fail(job, f"InternalFailure: {type(e).__name__}: {e}")

    def _fail(self, job: AsyncJob, text: str) -> None:
        assert self.store is not None
        try:
            self.store.write(job.failure_location, text.encode(), "text/plain")
        finally:
            self.on_async(job.ep.spec.name, "failed")

    @staticmethod
    def _stream_fault(http: Handler, ep: ServedEndpoint, fault: Fault) -> bool:
        """Play a mid-stream fault; True when the response ended with it."""
        kind = fault.kind
        if kind == "stream-error":
            frame = eventstream.exception_frame(
                "ModelStreamError", {"Message": fault.message, "ErrorCode": "ModelInvocationTimeExceeded"})
        elif kind == "stream-failure":
            frame = eventstream.exception_frame("InternalStreamFailure", {"Message": fault.message})
        elif kind == "corrupt":
            frame = eventstream.corrupt(eventstream.payload_part(b'{"token": {"text": "x"}}\n'))
        elif kind == "lmi-error":
            frame = eventstream.payload_part(ep.container.error_event() or b"")
        elif kind == "drop":
            http.hang_up()
            return True
        else:
            return False
        http.chunk(frame)
        http.end_chunks()
        return True


# the InvokeEndpoint members sent as headers: (member, longest value) — the service checks them
LENGTH_LIMITS = {
    "content-type": ("contentType", 1024), "accept": ("accept", 1024),
    "x-amzn-sagemaker-custom-attributes": ("customAttributes", 1024),
    "x-amzn-sagemaker-target-model": ("targetModel", 1024),
    "x-amzn-sagemaker-target-variant": ("targetVariant", 63),
    "x-amzn-sagemaker-target-container-hostname": ("targetContainerHostname", 63),
    "x-amzn-sagemaker-inference-id": ("inferenceId", 64),
    "x-amzn-sagemaker-enable-explanations": ("enableExplanations", 64),
    "x-amzn-sagemaker-inference-component": ("inferenceComponentName", 63),
    "x-amzn-sagemaker-session-id": ("sessionId", 256),
}


def check_lengths(headers: dict[str, str]) -> None:
    """SageMaker's own validation of header members too long, in its words (clients may skip theirs)."""
    errors = [f"Value '{headers[header]}' at '{member}' failed to satisfy constraint: Member must have length "
              f"less than or equal to {limit}"
              for header, (member, limit) in LENGTH_LIMITS.items() if len(headers.get(header) or "") > limit]
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected"
        raise ApiError(400, "ValidationError", f"{count}: {'; '.join(errors)}")


def _bounded(headers: dict[str, str], name: str, default: int, limit: int) -> int:
    """An ``X-Amzn-SageMaker-<name>`` header as seconds in 1..limit (botocore checks AWS's own minimum)."""
    raw = headers.get(f"x-amzn-sagemaker-{name.lower()}")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= limit:
        field_name = name[0].lower() + name[1:]
        raise ApiError(400, "ValidationError",
                       f"1 validation error detected: Value '{raw}' at '{field_name}' failed to satisfy "
                       f"constraint: Member must have value between 1 and {limit}")
    return int(raw)


def slices(lines: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The container's output as PayloadPart slices: a line each, or fixed-size slices."""
    if size <= 0:
        yield from lines
        return
    pending = b""
    for line in lines:
        pending += line
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending
