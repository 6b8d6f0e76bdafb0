"""HTTP plumbing of the local endpoint: the threaded server, the base request handler, AWS error shapes.

Three error shapes, as boto3 parses them: rest-json (runtime: ``x-amzn-ErrorType`` header and a JSON body),
JSON 1.1 (control plane: ``__type`` in the body) and the query protocol (STS: an XML ``ErrorResponse``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


class ApiError(Exception):
    """An AWS error response: HTTP status, error code, and the body's fields."""

    def __init__(self, status: int, code: str, message: str, **fields: object):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


def error_response(error: ApiError, protocol: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers AWS sends for ``error`` in ``protocol`` (``rest``, ``json`` or ``query``)."""
    if protocol == "query":
        xml = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
            "</Error><RequestId>local</RequestId></ErrorResponse>"
        )
        return xml.encode(), {"Content-Type": "text/xml"}
    if protocol == "json":
        body = {"__type": error.code, "Message": error.message, **error.fields}
        return json.dumps(body).encode(), {"Content-Type": "application/x-amz-json-1.1"}
    key = "Message" if error.code == "ModelError" else "message"
    body = {key: error.message, **error.fields}
    return json.dumps(body).encode(), {"Content-Type": "application/json", "x-amzn-ErrorType": error.code}


class Server(ThreadingHTTPServer):
    """A threaded HTTP server that tracks open connections so ``close_connections`` can end keep-alives."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when many clients connect at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.connections: set[socket.socket] = set()
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-response are normal (timeouts, interrupted streams)."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """Request plumbing shared by every route: headers, bodies, whole and chunked answers, dropped sockets."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it every keep-alive call waits ~40 ms for a delayed ACK
    server_version = "sm-magic-local"
    sys_version = ""
    server: Server
    answered = False  # a status line was sent for the current request

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:  # quiet by default
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self.answered = True
        super().send_response(code, message)

    def lower_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def read_body(self, limit: int) -> bytes:
        """The request body; a 413 ValidationError (and a closed connection) above ``limit`` bytes."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            raise ApiError(
                413, "ValidationError", f"Request payload of {length} bytes exceeds the maximum of {limit} bytes."
            )
        return self.rfile.read(length) if length else b""

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, data: object, status: int = 200) -> None:
        self.send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def send_api_error(self, error: ApiError, protocol: str) -> None:
        body, headers = error_response(error, protocol)
        self.send(error.status, body, headers)

    def fail(self, protocol: str) -> None:
        """A bug while answering: a 500 InternalFailure if nothing was sent yet, else a closed connection."""
        traceback.print_exc(file=sys.stderr)
        if self.answered:
            self.hang_up()
        else:
            self.send_api_error(ApiError(500, "InternalFailure", "An internal error occurred. Try again later."),
                                protocol)

    def start_chunks(self, headers: dict[str, str]) -> None:
        """Begin a 200 answer whose body follows in chunks."""
        self.send_response(200)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def drop(self, payload: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Answer half of ``payload`` (or nothing) and close the socket, as a crashing server would."""
        if payload:
            self.send_response(200)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
        self.hang_up()

    def hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
