"""The one place that calls ``invoke_endpoint`` and ``invoke_endpoint_with_response_stream``.

Builds the request (body from the handler, SageMaker's invoke headers from
:class:`InvokeOptions`), times the call, decodes the answer, and translates every failure into
the project's errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sm_magic.errors import HandlerError, SageMakerError, translate
from sm_magic.handlers.base import ContentHandler, Prompt
from sm_magic.options import InvokeOptions
from sm_magic.result import Request, Result
from sm_magic.session import Session
from sm_magic.streaming import decode_stream


def build_request(endpoint: str, prompt: Prompt, handler: ContentHandler, params: dict[str, Any],
                  options: InvokeOptions | None = None, stream: bool = False) -> Request:
    """The body and headers a call would send (no network)."""
    options = options or InvokeOptions()
    if handler.custom_attributes and not options.custom_attributes:
        options = InvokeOptions(**{**vars(options), "custom_attributes": handler.custom_attributes})
    try:
        body = handler.encode(prompt, params, stream=stream)
    except SageMakerError:
        raise
    except Exception as e:
        raise HandlerError(f"could not encode the request ({type(e).__name__}: {e}).", handler=handler.name) from e
    return Request(endpoint, body, handler.content_type, handler.accepts, options.headers(stream), stream,
                   options.boto_kwargs(stream))


def _call_kwargs(request: Request) -> dict[str, Any]:
    return {"EndpointName": request.endpoint, "Body": request.body, "ContentType": request.content_type,
            "Accept": request.accept, **request.invoke_params}


def invoke(session: Session, endpoint: str, prompt: Prompt, handler: ContentHandler,
           params: dict[str, Any] | None = None, options: InvokeOptions | None = None,
           dry_run: bool = False) -> Result:
    """One call; returns the decoded :class:`Result`."""
    params = params or {}
    request = build_request(endpoint, prompt, handler, params, options)
    if dry_run:
        return Result("", endpoint, handler.name, params=params, request=request, dry_run=True)
    client = session.runtime
    start = time.perf_counter()
    try:
        response = client.invoke_endpoint(**_call_kwargs(request))
        body = response["Body"].read()
    except Exception as e:
        raise translate(e, endpoint=endpoint, region=session.region) from e
    latency = time.perf_counter() - start
    out = _decode(handler, body, endpoint)
    return Result(
        out.text, endpoint, handler.name, latency=latency, variant=response.get("InvokedProductionVariant"),
        usage=out.usage, params=params, request=request, body=body, content_type=response.get("ContentType"),
        data=out.data, response_attributes=response.get("CustomAttributes"),
        new_session_id=response.get("NewSessionId"),
    )


def _decode(handler: ContentHandler, body: bytes, endpoint: str) -> Any:
    try:
        return handler.decode(body)
    except HandlerError as e:
        e.endpoint = endpoint
        raise
    except Exception as e:
        raise HandlerError(f"{type(e).__name__}: {e}", handler=handler.name, body=body, endpoint=endpoint) from e


class Stream:
    """A streamed call: iterate for text chunks. ``result`` is set when iteration ends,
    also after an error or :meth:`close` (then it holds the text that arrived)."""

    def __init__(self, session: Session, request: Request, handler: ContentHandler, params: dict[str, Any]):
        self.session = session
        self.request = request
        self.handler = handler
        self.params = params
        self.result: Result | None = None
        self._chunks: list[str] = []
        self._body: Any = None
        self._iterator: Iterator[str] | None = None

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    def _run(self) -> Iterator[str]:
        endpoint = self.request.endpoint
        start = time.perf_counter()
        first: float | None = None
        usage: dict[str, int] = {}
        response: dict[str, Any] = {}
        finished = False
        try:
            try:
                response = self.session.runtime.invoke_endpoint_with_response_stream(**_call_kwargs(self.request))
            except Exception as e:
                raise translate(e, endpoint=endpoint, region=self.session.region) from e
            self._body = response["Body"]
            parts = (event["PayloadPart"]["Bytes"] for event in self._body if "PayloadPart" in event)
            try:
                for out in decode_stream(parts, self.handler):
                    if out.usage:
                        usage.update(out.usage)
                    if out.text:
                        if first is None:
                            first = time.perf_counter() - start
                        self._chunks.append(out.text)
                        yield out.text
            except SageMakerError as e:
                e.endpoint = e.endpoint or endpoint
                if hasattr(e, "partial"):
                    e.partial = self.text
                raise
            except Exception as e:
                raise translate(e, endpoint=endpoint, region=self.session.region, partial=self.text) from e
            finished = True
        finally:
            self.result = Result(
                self.text, endpoint, self.handler.name, latency=time.perf_counter() - start,
                variant=response.get("InvokedProductionVariant"), usage=usage or None, params=self.params,
                request=self.request, content_type=response.get("ContentType"), streamed=True,
                interrupted=not finished, first_token=first,
                response_attributes=response.get("CustomAttributes"),
            )

    def close(self) -> None:
        """Stop reading: the connection is closed and ``result`` keeps what arrived."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        if self._body is not None:
            self._body.close()


def stream(session: Session, endpoint: str, prompt: Prompt, handler: ContentHandler,
           params: dict[str, Any] | None = None, options: InvokeOptions | None = None) -> Stream:
    """A streamed call (nothing is sent until iteration starts)."""
    params = params or {}
    return Stream(session, build_request(endpoint, prompt, handler, params, options, stream=True), handler, params)
