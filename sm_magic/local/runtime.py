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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from sm_magic.local import eventstream
from sm_magic.local.backends import Backend, make_backend
from sm_magic.local.config import EndpointSpec, ServerConfig
from sm_magic.local.containers import CONTAINERS, ContainerError, Generation, Usage
from sm_magic.local.faults import Fault, FaultPlan
from sm_magic.local.http import ApiError, Handler


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
        self.backend: Backend = make_backend(spec.backend, spec.token_delay, spec.fill_to_max_tokens)
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


class Runtime:
    """Invoke and stream for the served endpoints, as the SageMaker runtime answers them."""

    def __init__(self, config: ServerConfig):
        self.config = config

    # -- checks and errors ---------------------------------------------------------------------
    def admit(self, ep: ServedEndpoint, headers: dict[str, str]) -> Fault | None:
        """Checks shared by the invoke routes; plays this call's fault (raising its error) and returns it."""
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

    # -- routes --------------------------------------------------------------------------------
    def invoke(self, http: Handler, ep: ServedEndpoint, headers: dict[str, str], body: bytes) -> None:
        """``POST /endpoints/{name}/invocations``."""
        fault = self.admit(ep, headers)
        gen, tokens, usage = self.generate(ep, headers, body)
        out = self.response_headers(ep, headers)
        text = "".join(tokens)
        finish = "length" if usage.completion_tokens >= gen.max_new_tokens else "stop"
        payload = ep.container.response(gen, text, usage, finish)
        if fault and fault.kind == "malformed":
            payload = ep.container.malformed()
        out = {"Content-Type": "application/json", **out}
        if fault and fault.kind in ("reset", "drop"):
            http.drop(payload if fault.kind == "drop" else b"", out)
            return
        http.send(200, payload, out)

    def stream(self, http: Handler, ep: ServedEndpoint, headers: dict[str, str], body: bytes) -> None:
        """``POST /endpoints/{name}/invocations-response-stream``: PayloadPart events, faults mid-stream."""
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
