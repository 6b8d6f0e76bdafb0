"""The local SageMaker endpoint: runtime and control-plane routes over HTTP/1.1 on loopback.

Speaks what boto3 speaks to SageMaker: rest-json InvokeEndpoint, event-stream
InvokeEndpointWithResponseStream, JSON 1.1 control-plane calls, STS GetCallerIdentity/AssumeRole,
AWS's error shapes, and (when given credentials) SigV4 verification. :class:`LocalEndpoint` owns the
lifecycle, the served endpoints, the counters and the routing; the work lives in ``runtime``
(invoke, stream, faults), ``control`` (describe/list, STS) and ``http`` (plumbing, error shapes).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from urllib.parse import parse_qs, unquote, urlsplit

from sm_magic.local.config import EndpointSpec, ServerConfig
from sm_magic.local.control import control_plane_answer, sts_answer, timestamp
from sm_magic.local.faults import Fault
from sm_magic.local.http import ApiError, Handler, Server
from sm_magic.local.runtime import Runtime, ServedEndpoint
from sm_magic.local.sigv4 import SignatureProblem, verify

OPERATIONS = {"invocations": "InvokeEndpoint", "invocations-response-stream": "InvokeEndpointWithResponseStream",
              "async-invocations": "InvokeEndpointAsync"}
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
NAME_LIMIT = 63
ROUTE = re.compile(r"^/endpoints/(?P<name>[^/]+)/(?P<op>invocations|invocations-response-stream|async-invocations)$")


class Stats:
    """Request counters: per endpoint (operations, error codes, async outcomes) and per operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.operations: Counter[str] = Counter()
        self.per_endpoint: dict[str, Counter[str]] = {}

    def count(self, key: str, endpoint: str | None = None) -> None:
        """One more ``key`` (an operation name, ``error:<Code>`` or ``async:<outcome>``)."""
        with self._lock:
            if endpoint is None:
                self.operations[key] += 1
            else:
                self.per_endpoint.setdefault(endpoint, Counter())[key] += 1
                if not key.startswith(("error:", "async:")):
                    self.operations[key] += 1

    def snapshot(self, endpoints: dict[str, ServedEndpoint]) -> dict:
        """What ``GET /_local/stats`` answers."""
        with self._lock:
            out = {}
            for name, ep in endpoints.items():
                counts = self.per_endpoint.get(name, Counter())
                ops = {k: v for k, v in counts.items() if ":" not in k}
                out[name] = {
                    "calls": sum(ops.values()), "operations": ops, "in_flight": ep.capacity.in_flight,
                    "max_concurrency": ep.spec.max_concurrency, "max_rps": ep.spec.max_rps,
                    "errors": {k[6:]: v for k, v in counts.items() if k.startswith("error:")},
                    "async": {k[6:]: v for k, v in counts.items() if k.startswith("async:")},
                }
            return {"endpoints": out, "operations": dict(self.operations)}


class LocalEndpoint:
    """A running local endpoint. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, config: ServerConfig | None = None, **overrides: object):
        self.config = config or ServerConfig()
        for key, value in overrides.items():
            setattr(self.config, key, value)
        if not self.config.endpoints:
            self.config.endpoints = [EndpointSpec("endpoint-name")]
        self._endpoints: dict[str, ServedEndpoint] = {}
        for spec in self.config.endpoints:
            self.add_endpoint(spec)
        waiting = [s.name for s in self.config.endpoints if s.async_]
        if waiting and not self.config.s3_endpoint_url:
            raise ValueError(f"async endpoints {waiting} need an S3 service: set s3_endpoint_url (--s3-endpoint-url)")
        self.runtime = Runtime(self.config, on_async=lambda name, outcome: self.stats.count(f"async:{outcome}", name))
        self.calls: Counter[str] = Counter()  # endpoint name → runtime calls received
        self.stats = Stats()
        self.assumed: dict[str, str] = {}  # access key id issued by AssumeRole → assumed-role ARN
        self._calls_lock = threading.Lock()
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalEndpoint:
        if self.runtime.store is not None:  # the async endpoints' buckets, on the local S3 service
            for spec in self.config.endpoints:
                if spec.async_:
                    self.runtime.store.ensure_bucket(spec.output_path)
                    self.runtime.store.ensure_bucket(spec.failure_path)
        handler = type("BoundHandler", (_Routes,), {"endpoint": self})
        self._httpd = Server((self.config.host, self.config.port), handler)
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
        self._httpd.close_connections()
        self._httpd.server_close()
        self._httpd = None
        self.runtime.close()

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
        env = {
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url,
            "AWS_ENDPOINT_URL_SAGEMAKER": self.url,
            "AWS_ENDPOINT_URL_STS": self.url,
            "AWS_DEFAULT_REGION": self.config.region,
        }
        if self.config.s3_endpoint_url:  # async endpoints: where requests and answers live
            env["AWS_ENDPOINT_URL_S3"] = self.config.s3_endpoint_url
        return env

    def add_endpoint(self, spec: EndpointSpec) -> None:
        self._endpoints[spec.name] = ServedEndpoint(spec)

    def inject(self, endpoint: str, *faults: Fault) -> None:
        """Script faults for the next calls to ``endpoint``."""
        self.find(endpoint).faults.add(*faults)

    def clear_faults(self, endpoint: str | None = None) -> None:
        for name, ep in self._endpoints.items():
            if endpoint in (None, name):
                ep.faults.clear()

    # -- routing helpers -----------------------------------------------------------------------
    def find(self, name: str, authorization: str = "") -> ServedEndpoint:
        """The endpoint a runtime call names, or SageMaker's ValidationError."""
        failed = [constraint for constraint, broken in (
            ("Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*",
             not NAME_PATTERN.match(name)),
            (f"Member must have length less than or equal to {NAME_LIMIT}", len(name) > NAME_LIMIT)) if broken]
        if failed:
            count = f"{len(failed)} validation error{'s' if len(failed) > 1 else ''} detected"
            raise ApiError(400, "ValidationError", f"{count}: " + "; ".join(
                f"Value '{name}' at 'endpointName' failed to satisfy constraint: {c}" for c in failed))
        signed_for = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", authorization)
        missing = ApiError(400, "ValidationError", f"Endpoint {name} of account {self.config.account} not found.")
        if self.config.strict_region and signed_for and signed_for.group(1) != self.config.region:
            raise missing  # another region is another service endpoint on AWS
        try:
            return self._endpoints[name]
        except KeyError:
            raise missing from None

    def count(self, name: str, operation: str) -> None:
        with self._calls_lock:
            self.calls[name] += 1
        self.stats.count(operation, name)


class _Routes(Handler):
    """Routes requests to the runtime, the control plane, STS and the ``/_local`` test hooks."""

    endpoint: LocalEndpoint  # set on the subclass made by LocalEndpoint.start

    def _protocol(self) -> str:
        if "x-amz-target" in self.headers:
            return "json"
        if self.path.startswith("/endpoints/"):
            return "rest"
        return "query"

    def do_GET(self) -> None:
        if self.path == "/_local/calls":
            self.send_json(self.endpoint.calls)
        elif self.path == "/_local/stats":
            self.send_json(self.endpoint.stats.snapshot(self.endpoint._endpoints))
        elif self.path in ("/_local/health", "/ping"):
            self.send_json({"status": "ok"})
        else:
            self.send_api_error(ApiError(404, "UnknownOperationException", "Unknown route"), "rest")

    def do_DELETE(self) -> None:
        if self.path == "/_local/faults":
            self.endpoint.clear_faults()
            self.send_json({})
        else:
            self.send_api_error(ApiError(404, "UnknownOperationException", "Unknown route"), "rest")

    def do_POST(self) -> None:
        protocol = self._protocol()
        self.answered = False
        try:
            body = self.read_body(self.endpoint.config.max_body_bytes)
            if self.path == "/_local/faults":
                try:
                    data = json.loads(body)
                    name, faults = data["endpoint"], [Fault(**f) for f in data.get("faults", [])]
                    if not isinstance(name, str):
                        raise TypeError(f"endpoint={name!r}: an endpoint's name")
                except (ValueError, TypeError, KeyError, AttributeError) as e:
                    raise ApiError(400, "ValidationException", f"bad fault: {e!r}") from None
                self.endpoint.inject(name, *faults)
                self.send_json({})
                return
            self._check_signature(body, protocol)
            if protocol == "json":
                self._control_plane(body)
            elif protocol == "query":
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                self.endpoint.stats.count(form.get("Action", "Unknown"))
                xml = sts_answer(self.endpoint.config, self.endpoint.assumed, form,
                                 self.headers.get("Authorization", ""))
                self.send(200, xml, {"Content-Type": "text/xml"})
            else:
                self._runtime(body)
        except ApiError as error:
            self.send_api_error(error, protocol)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            self.fail(protocol)

    def _check_signature(self, body: bytes, protocol: str) -> None:
        secrets = self.endpoint.config.credentials
        if not secrets:
            return
        try:
            verify(self.command, self.path, self.lower_headers(), body, secrets)
        except SignatureProblem as problem:
            code = problem.code
            if protocol == "query" and code == "InvalidSignatureException":
                code = "SignatureDoesNotMatch"  # the query-protocol services (STS) name it so
            raise ApiError(403, code, problem.message) from None

    def _runtime(self, body: bytes) -> None:
        match = ROUTE.match(urlsplit(self.path).path)
        if not match:
            raise ApiError(404, "UnknownOperationException", f"No route for {self.path}")
        name, op = unquote(match["name"]), match["op"]
        headers = self.lower_headers()
        ep = self.endpoint.find(name, headers.get("authorization", ""))
        self.endpoint.count(name, OPERATIONS[op])
        runtime = self.endpoint.runtime
        try:
            if op == "async-invocations":
                runtime.submit(self, ep, headers, body)  # queued: the worker pool is its capacity
                return
            with ep.capacity.slot():
                if op == "invocations":
                    runtime.invoke(self, ep, headers, body)
                else:
                    runtime.stream(self, ep, headers, body)
        except ApiError as error:
            self.endpoint.stats.count(f"error:{error.code}", name)
            raise

    def _control_plane(self, body: bytes) -> None:
        target = self.headers["x-amz-target"]
        service, _, op = target.partition(".")
        if service != "SageMaker":
            raise ApiError(400, "UnknownOperationException", f"Unknown target {target}")
        self.endpoint.stats.count(op)
        answer = control_plane_answer(self.endpoint.config, self.endpoint._endpoints, op, json.loads(body or b"{}"))
        self.send(200, json.dumps(answer, default=timestamp).encode(), {"Content-Type": "application/x-amz-json-1.1"})
