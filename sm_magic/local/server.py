"""The local SageMaker endpoint: runtime and control-plane routes over HTTP/1.1 on loopback.

Speaks what boto3 speaks to SageMaker: rest-json InvokeEndpoint, event-stream
InvokeEndpointWithResponseStream, JSON 1.1 control-plane calls, STS GetCallerIdentity,
AWS's error shapes, and (when given credentials) SigV4 verification.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from sm_magic.local import eventstream
from sm_magic.local.backends import Backend, make_backend
from sm_magic.local.config import EndpointSpec, ServerConfig
from sm_magic.local.containers import CONTAINERS, ContainerError, Generation, Usage
from sm_magic.local.faults import Fault, FaultPlan
from sm_magic.local.sigv4 import SignatureProblem, verify

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROUTE = re.compile(r"^/endpoints/(?P<name>[^/]+)/(?P<op>invocations|invocations-response-stream|async-invocations)$")
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


class ApiError(Exception):
    """An AWS error response: HTTP status, error code, and the body's fields."""

    def __init__(self, status: int, code: str, message: str, **fields: object):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when many clients connect at once

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-response are normal (timeouts, interrupted streams)."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Endpoint:
    """Runtime state of one served endpoint."""

    def __init__(self, spec: EndpointSpec):
        self.spec = spec
        self.container = CONTAINERS[spec.format]
        self.backend: Backend = make_backend(spec.backend, spec.token_delay, spec.fill_to_max_tokens)
        self.faults = FaultPlan(spec.faults)


class LocalEndpoint:
    """A running local endpoint. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, config: ServerConfig | None = None, **overrides: object):
        self.config = config or ServerConfig()
        for key, value in overrides.items():
            setattr(self.config, key, value)
        if not self.config.endpoints:
            self.config.endpoints = [EndpointSpec("endpoint-name")]
        self._endpoints: dict[str, _Endpoint] = {}
        for spec in self.config.endpoints:
            self.add_endpoint(spec)
        self.calls: Counter[str] = Counter()
        self.assumed: dict[str, str] = {}  # access key id issued by AssumeRole → assumed-role ARN
        self._calls_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalEndpoint:
        handler = type("Handler", (_Handler,), {"endpoint": self})
        self._httpd = _Server((self.config.host, self.config.port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sm-magic-local", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Block until interrupted (the CLI)."""
        if self._httpd is None:
            self.start()
        try:
            while self._thread and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._httpd = None

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and users see ------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and the aws CLI) at this endpoint."""
        return {
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url,
            "AWS_ENDPOINT_URL_SAGEMAKER": self.url,
            "AWS_ENDPOINT_URL_STS": self.url,
            "AWS_DEFAULT_REGION": self.config.region,
        }

    def add_endpoint(self, spec: EndpointSpec) -> None:
        self._endpoints[spec.name] = _Endpoint(spec)

    def inject(self, endpoint: str, *faults: Fault) -> None:
        """Script faults for the next calls to ``endpoint``."""
        self._get(endpoint).faults.add(*faults)

    def clear_faults(self, endpoint: str | None = None) -> None:
        for name, ep in self._endpoints.items():
            if endpoint in (None, name):
                ep.faults.clear()

    def _get(self, name: str) -> _Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise ApiError(
                400, "ValidationError", f"Endpoint {name} of account {self.config.account} not found."
            ) from None

    def _count(self, name: str) -> None:
        with self._calls_lock:
            self.calls[name] += 1

    def _log_arn(self, name: str) -> str:
        return (
            f"arn:aws:logs:{self.config.region}:{self.config.account}:log-group:"
            f"/aws/sagemaker/Endpoints/{name}"
        )

    # -- runtime -------------------------------------------------------------------------------
    def prepare(self, name: str, headers: dict[str, str], body: bytes) -> tuple[_Endpoint, Fault | None]:
        """Checks shared by both invoke routes; returns the endpoint and this call's fault."""
        if not NAME_PATTERN.match(name):
            raise ApiError(
                400, "ValidationError",
                f"1 validation error detected: Value '{name}' at 'endpointName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*",
            )
        signed_for = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", headers.get("authorization", ""))
        if self.config.strict_region and signed_for and signed_for.group(1) != self.config.region:
            raise ApiError(400, "ValidationError",  # another region is another service endpoint on AWS
                           f"Endpoint {name} of account {self.config.account} not found.")
        ep = self._get(name)
        self._count(name)
        spec = ep.spec
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
                400, "ValidationError",
                f"Target variant {variant} not found for endpoint {name} of account {self.config.account}.",
            )
        if spec.status != "InService":
            raise ApiError(400, "ValidationError", f"Endpoint {name} is not in service: {spec.status}.")
        if spec.latency:
            time.sleep(spec.latency)
        fault = ep.faults.take()
        if fault is not None:
            self._raise_for(fault, name)
        return ep, fault

    def _raise_for(self, fault: Fault, name: str) -> None:
        kind = fault.kind
        if kind == "latency":
            time.sleep(fault.seconds)
        elif kind == "throttle":
            raise ApiError(429, "ThrottlingException", "Rate exceeded")
        elif kind == "not-ready":
            raise ApiError(429, "ModelNotReadyException", "Model is not ready yet. Try again later.")
        elif kind == "internal":
            raise ApiError(500, "InternalFailure", "An internal error occurred. Try again later.")
        elif kind == "unavailable":
            raise ApiError(503, "ServiceUnavailable", "The service is unavailable. Try again later.")
        elif kind == "dependency":
            raise ApiError(530, "InternalDependencyException",
                           "Your request caused an exception with an internal dependency.")
        elif kind == "model-error":
            raise self.model_error(name, fault.status, fault.message)
        elif kind == "expired-token":
            raise ApiError(400, "ExpiredTokenException", "The security token included in the request is expired")

    def model_error(self, name: str, status: int, message: str) -> ApiError:
        side = "client" if 400 <= status < 500 else "server"
        return ApiError(
            424, "ModelError",
            f'Received {side} error ({status}) from primary with message "{message}". See '
            f"https://{self.config.region}.console.aws.amazon.com/cloudwatch/home?region="
            f"{self.config.region}#logEventViewer:group=/aws/sagemaker/Endpoints/{name} in account "
            f"{self.config.account} for more information.",
            OriginalStatusCode=status,
            OriginalMessage=message,
            LogStreamArn=self._log_arn(name),
            ErrorCode=f"{side.upper()}_ERROR_FROM_MODEL",
        )

    def generate(self, ep: _Endpoint, headers: dict[str, str], body: bytes) -> tuple[Generation, Iterator[str], Usage]:
        try:
            gen = ep.container.parse(body, headers)
        except ContainerError as e:
            raise self.model_error(ep.spec.name, e.status, e.message) from None
        prompt = gen.prompt if gen.prompt is not None else json.dumps(gen.messages)
        usage = Usage(prompt_tokens=ep.backend.count_tokens(prompt))
        if ep.container.name == "embedding":
            return gen, iter(()), usage

        def counted() -> Iterator[str]:
            for token in ep.backend.generate(gen):
                usage.completion_tokens += 1
                yield token

        return gen, counted(), usage


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "sm-magic-local"
    sys_version = ""
    endpoint: LocalEndpoint  # set on the subclass made by LocalEndpoint.start

    def setup(self) -> None:
        super().setup()
        self.endpoint._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.endpoint._connections.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:  # quiet by default
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        limit = self.endpoint.config.max_body_bytes
        if length > limit:
            self.close_connection = True
            raise ApiError(
                413, "ValidationError",
                f"Request payload of {length} bytes exceeds the maximum of {limit} bytes.",
            )
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, error: ApiError, protocol: str) -> None:
        if protocol == "query":
            xml = (
                "<ErrorResponse><Error><Type>Sender</Type>"
                f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
                "</Error><RequestId>local</RequestId></ErrorResponse>"
            )
            self._send(error.status, xml.encode(), {"Content-Type": "text/xml"})
            return
        if protocol == "json":
            body = {"__type": error.code, "Message": error.message, **error.fields}
            headers = {"Content-Type": "application/x-amz-json-1.1"}
        else:
            body = {"message": error.message, **error.fields}
            if error.code == "ModelError":
                body = {"Message": error.message, **error.fields}
            headers = {"Content-Type": "application/json", "x-amzn-ErrorType": error.code}
        self._send(error.status, json.dumps(body).encode(), headers)

    def _protocol(self) -> str:
        if "x-amz-target" in self._headers():
            return "json"
        if self.path.startswith("/endpoints/"):
            return "rest"
        return "query"

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path == "/_local/calls":
            self._send(200, json.dumps(self.endpoint.calls).encode(), {"Content-Type": "application/json"})
        elif self.path in ("/_local/health", "/ping"):
            self._send(200, b'{"status": "ok"}', {"Content-Type": "application/json"})
        else:
            self._send_error(ApiError(404, "UnknownOperationException", "Unknown route"), "rest")

    def do_DELETE(self) -> None:
        if self.path == "/_local/faults":
            self.endpoint.clear_faults()
            self._send(200, b"{}", {"Content-Type": "application/json"})
        else:
            self._send_error(ApiError(404, "UnknownOperationException", "Unknown route"), "rest")

    def do_POST(self) -> None:
        protocol = self._protocol()
        try:
            body = self._read_body()
            if self.path == "/_local/faults":
                self._post_faults(body)
                return
            self._check_signature(body)
            if protocol == "json":
                self._control_plane(body)
            elif protocol == "query":
                self._sts(body)
            else:
                self._runtime(body)
        except ApiError as error:
            self._send_error(error, protocol)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _post_faults(self, body: bytes) -> None:
        data = json.loads(body)
        self.endpoint.inject(data["endpoint"], *(Fault(**f) for f in data.get("faults", [])))
        self._send(200, b"{}", {"Content-Type": "application/json"})

    def _check_signature(self, body: bytes) -> None:
        secrets = self.endpoint.config.credentials
        if not secrets:
            return
        try:
            verify(self.command, self.path, self._headers(), body, secrets)
        except SignatureProblem as problem:
            raise ApiError(403, problem.code, problem.message) from None

    # -- runtime routes ------------------------------------------------------------------------
    def _runtime(self, body: bytes) -> None:
        match = ROUTE.match(urlsplit(self.path).path)
        if not match:
            raise ApiError(404, "UnknownOperationException", f"No route for {self.path}")
        name, op = unquote(match["name"]), match["op"]
        headers = self._headers()
        if op == "async-invocations":
            raise ApiError(400, "ValidationError", "Asynchronous inference is not offered by the local endpoint.")
        ep, fault = self.endpoint.prepare(name, headers, body)
        gen, tokens, usage = self.endpoint.generate(ep, headers, body)
        response_headers = self._invoke_headers(ep, headers)
        if op == "invocations":
            self._invoke(ep, gen, tokens, usage, fault, response_headers)
        else:
            self._invoke_stream(ep, gen, tokens, usage, fault, response_headers)

    def _invoke_headers(self, ep: _Endpoint, headers: dict[str, str]) -> dict[str, str]:
        variant = headers.get("x-amzn-sagemaker-target-variant") or ep.spec.variants[0]
        out = {"x-Amzn-Invoked-Production-Variant": variant}
        if "x-amzn-sagemaker-custom-attributes" in headers:
            out["X-Amzn-SageMaker-Custom-Attributes"] = headers["x-amzn-sagemaker-custom-attributes"]
        session = headers.get("x-amzn-sagemaker-session-id")
        if session == "NEW_SESSION":
            expires = (datetime.now(UTC) + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
            out["X-Amzn-SageMaker-New-Session-Id"] = f"{uuid.uuid4()}; Expires={expires}"
        return out

    def _invoke(self, ep: _Endpoint, gen: Generation, tokens: Iterator[str], usage: Usage,
                fault: Fault | None, headers: dict[str, str]) -> None:
        text = "".join(tokens)
        finish = "length" if usage.completion_tokens >= gen.max_new_tokens else "stop"
        payload = ep.container.response(gen, text, usage, finish)
        content_type = "application/json"
        if fault and fault.kind == "malformed":
            payload = ep.container.malformed()
        if fault and fault.kind in ("reset", "drop"):
            self._drop(payload if fault.kind == "drop" else b"", headers, content_type)
            return
        self._send(200, payload, {"Content-Type": content_type, **headers})

    def _drop(self, payload: bytes, headers: dict[str, str], content_type: str) -> None:
        """Answer part of a response (or nothing) and close the socket."""
        if payload:
            self.send_response(200)
            for key, value in {"Content-Type": content_type, **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _invoke_stream(self, ep: _Endpoint, gen: Generation, tokens: Iterator[str], usage: Usage,
                       fault: Fault | None, headers: dict[str, str]) -> None:
        if fault and fault.kind == "reset":
            self._drop(b"", headers, "")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("X-Amzn-SageMaker-Content-Type", ep.container.stream_content_type(gen))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        parts = 0
        try:
            lines = ep.container.stream(gen, tokens, usage)
            if fault and fault.kind == "malformed":
                lines = iter([ep.container.malformed()])
            for data in _slices(lines, ep.spec.part_size):
                if fault and parts >= fault.after_parts and self._stream_fault(ep, fault):
                    return
                self._chunk(eventstream.payload_part(data))
                parts += 1
            if fault and parts < fault.after_parts and fault.kind != "malformed" and self._stream_fault(ep, fault):
                return
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            lines.close()

    def _stream_fault(self, ep: _Endpoint, fault: Fault) -> bool:
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
            line = ep.container.error_event() or b""
            self._chunk(eventstream.payload_part(line))
            self.wfile.write(b"0\r\n\r\n")
            return True
        elif kind == "drop":
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        else:
            return False
        self._chunk(frame)
        self.wfile.write(b"0\r\n\r\n")
        return True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- control plane ------------------------------------------------------------------------
    def _control_plane(self, body: bytes) -> None:
        target = self._headers()["x-amz-target"]
        service, _, op = target.partition(".")
        if service != "SageMaker":
            raise ApiError(400, "UnknownOperationException", f"Unknown target {target}")
        request = json.loads(body or b"{}")
        answer = _control_plane_answer(self.endpoint, op, request)
        self._send(200, json.dumps(answer, default=_timestamp).encode(),
                   {"Content-Type": "application/x-amz-json-1.1"})

    def _sts(self, body: bytes) -> None:
        """STS GetCallerIdentity and AssumeRole (query protocol, XML answers)."""
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = form.get("Action")
        account = self.endpoint.config.account
        if action == "GetCallerIdentity":
            key = re.search(r"Credential=([^/]+)/", self.headers.get("Authorization", ""))
            arn = self.endpoint.assumed.get(key.group(1) if key else "", f"arn:aws:iam::{account}:user/local")
            result = f"<Arn>{escape(arn)}</Arn><UserId>AIDALOCALUSER</UserId><Account>{account}</Account>"
        elif action == "AssumeRole":
            duration = int(form.get("DurationSeconds", 3600))
            if not 900 <= duration <= 43200:
                raise ApiError(400, "ValidationError", "DurationSeconds must be between 900 and 43200.")
            key = "ASIA" + uuid.uuid4().hex[:16].upper()
            role, name = form.get("RoleArn", ""), form.get("RoleSessionName", "session")
            assumed = f"{role.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/')}/{name}"
            self.endpoint.assumed[key] = assumed
            expires = (datetime.now(UTC) + timedelta(seconds=duration)).strftime("%Y-%m-%dT%H:%M:%SZ")
            result = (f"<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{uuid.uuid4().hex}"
                      f"</SecretAccessKey><SessionToken>{uuid.uuid4().hex}</SessionToken>"
                      f"<Expiration>{expires}</Expiration></Credentials>"
                      f"<AssumedRoleUser><Arn>{escape(assumed)}</Arn><AssumedRoleId>AROALOCAL:{escape(name)}"
                      "</AssumedRoleId></AssumedRoleUser>")
        else:
            raise ApiError(400, "InvalidAction", f"Could not find operation {action}")
        xml = (f'<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><{action}Result>{result}'
               f"</{action}Result><ResponseMetadata><RequestId>local</RequestId></ResponseMetadata></{action}Response>")
        self._send(200, xml.encode(), {"Content-Type": "text/xml"})


def _timestamp(value: object) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(type(value))


def _slices(lines: Iterator[bytes], size: int) -> Iterator[bytes]:
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


def _model_environment(fmt: str) -> dict[str, str]:
    """What real deployments of each format set (detection reads it)."""
    if fmt.startswith("tgi"):
        env = {"HF_MODEL_ID": "HuggingFaceTB/SmolLM2-135M-Instruct", "SM_NUM_GPUS": "1"}
        if fmt == "tgi-messages":
            env["MESSAGES_API_ENABLED"] = "true"
        return env
    if fmt.startswith("lmi"):
        return {"HF_MODEL_ID": "HuggingFaceTB/SmolLM2-135M-Instruct", "OPTION_ROLLING_BATCH": "vllm"}
    return {"SAGEMAKER_PROGRAM": "inference.py"}


def _control_plane_answer(server: LocalEndpoint, op: str, request: dict) -> dict:
    config = server.config
    arn = f"arn:aws:sagemaker:{config.region}:{config.account}"
    specs = {ep.spec.name: ep for ep in server._endpoints.values()}

    def model_name(ep: _Endpoint) -> str:
        return f"{ep.container.model_name}-{ep.spec.name}"

    def find(name: str, kind: str) -> _Endpoint:
        for ep in specs.values():
            if name in (ep.spec.name, f"{ep.spec.name}-config", model_name(ep)):
                return ep
        raise ApiError(400, "ValidationException", f'Could not find {kind} "{name}".')

    if op == "ListEndpoints":
        items = [
            {"EndpointName": name, "EndpointArn": f"{arn}:endpoint/{name}", "CreationTime": CREATED,
             "LastModifiedTime": CREATED, "EndpointStatus": ep.spec.status}
            for name, ep in sorted(specs.items())
            if request.get("NameContains", "") in name
        ]
        return {"Endpoints": items[: request.get("MaxResults", 100)]}
    if op == "DescribeEndpoint":
        ep = find(request["EndpointName"], "endpoint")
        name = ep.spec.name
        return {
            "EndpointName": name, "EndpointArn": f"{arn}:endpoint/{name}",
            "EndpointConfigName": f"{name}-config", "EndpointStatus": ep.spec.status,
            "CreationTime": CREATED, "LastModifiedTime": CREATED,
            "ProductionVariants": [
                {"VariantName": v, "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                 "CurrentInstanceCount": ep.spec.instance_count, "DesiredInstanceCount": ep.spec.instance_count}
                for v in ep.spec.variants
            ],
        }
    if op == "DescribeEndpointConfig":
        ep = find(request["EndpointConfigName"], "endpoint configuration")
        name = ep.spec.name
        return {
            "EndpointConfigName": f"{name}-config", "EndpointConfigArn": f"{arn}:endpoint-config/{name}-config",
            "CreationTime": CREATED,
            "ProductionVariants": [
                {"VariantName": v, "ModelName": model_name(ep), "InstanceType": ep.spec.instance_type,
                 "InitialInstanceCount": ep.spec.instance_count}
                for v in ep.spec.variants
            ],
        }
    if op == "DescribeModel":
        ep = find(request["ModelName"], "model")
        return {
            "ModelName": model_name(ep), "ModelArn": f"{arn}:model/{model_name(ep)}",
            "CreationTime": CREATED, "ExecutionRoleArn": f"arn:aws:iam::{config.account}:role/local",
            "PrimaryContainer": {
                "Image": ep.container.image,
                "Environment": _model_environment(ep.spec.format),
            },
        }
    if op == "ListInferenceComponents":
        items = [
            {"InferenceComponentName": c, "EndpointName": ep.spec.name, "VariantName": ep.spec.variants[0],
             "InferenceComponentStatus": "InService", "CreationTime": CREATED, "LastModifiedTime": CREATED,
             "InferenceComponentArn": f"{arn}:inference-component/{c}", "EndpointArn": f"{arn}:endpoint/{ep.spec.name}"}
            for ep in specs.values() for c in ep.spec.inference_components
            if request.get("EndpointNameEquals") in (None, ep.spec.name)
        ]
        return {"InferenceComponents": items}
    raise ApiError(400, "UnknownOperationException", f"The local endpoint does not implement {op}.")
