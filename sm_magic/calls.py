"""The one place that calls ``invoke_endpoint`` and ``invoke_endpoint_with_response_stream``.

Builds the request (body from the handler, SageMaker's invoke headers from
:class:`InvokeOptions`), times the call, decodes the answer, and translates every failure into
the project's errors. :func:`build_request` is the edge every entry point passes: text that UTF-8
cannot encode and bodies above the real-time limit are refused there, before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sm_magic.errors import EncodingError, HandlerError, RequestTooLarge, SageMakerError, translate
from sm_magic.handlers.base import ContentHandler, Prompt
from sm_magic.options import InvokeOptions
from sm_magic.result import Request, Result
from sm_magic.session import Session
from sm_magic.streaming import StreamDecoder

REALTIME_BODY_LIMIT = 6 * 1024 * 1024  # bytes: InvokeEndpoint(WithResponseStream)'s Body max in botocore's model
SNIPPET = 20  # characters shown either side of a character that cannot be encoded


def check_encodable(text: str, where: str = "prompt", endpoint: str | None = None, use: str = "sent",
                    hint: str | None = None) -> None:
    """Raise :class:`EncodingError` when UTF-8 cannot encode ``text`` (a lone surrogate): "The {where} cannot
    be {use}: ..." (``hint``: what to do instead, when not the default's)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        start, end = max(0, e.start - SNIPPET), e.start + SNIPPET
        snippet = ("…" if start else "") + repr(text[start:end])[1:-1] + ("…" if end < len(text) else "")
        raise EncodingError(where=where, position=e.start, character=text[e.start], snippet=snippet,
                            endpoint=endpoint, use=use, hint=hint) from None


def _check_values(value: Any, where: str, endpoint: str | None) -> None:
    if isinstance(value, str):
        check_encodable(value, where, endpoint)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(item, f"{where} {key!r}" if where == "parameter" else where, endpoint)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_values(item, where, endpoint)


def check_prompt(prompt: Prompt, params: dict[str, Any], endpoint: str | None = None) -> None:
    """Every text a request carries must be encodable: the prompt, each message, string parameters."""
    if isinstance(prompt, str):
        check_encodable(prompt, "prompt", endpoint)
    else:
        for i, message in enumerate(prompt, 1):
            role = message.get("role", "?") if isinstance(message, dict) else "?"
            content = message.get("content") if isinstance(message, dict) else message
            _check_values(content, f"message {i} ({role})", endpoint)
    _check_values(params, "parameter", endpoint)


def build_request(endpoint: str, prompt: Prompt, handler: ContentHandler, params: dict[str, Any],
                  options: InvokeOptions | None = None, stream: bool = False,
                  limit: int | None = REALTIME_BODY_LIMIT) -> Request:
    """The body and headers a call would send (no network).

    Raises :class:`EncodingError` for text UTF-8 cannot encode and :class:`RequestTooLarge` for a body
    above ``limit`` bytes (the real-time limit; asynchronous inference passes its own, or None).
    """
    check_encodable(endpoint, "endpoint name")
    check_prompt(prompt, params, endpoint)
    options = options or InvokeOptions()
    if handler.custom_attributes and not options.custom_attributes:
        options = InvokeOptions(**{**vars(options), "custom_attributes": handler.custom_attributes})
    try:
        body = handler.encode(prompt, params, stream=stream)
    except SageMakerError:
        raise
    except Exception as e:
        raise HandlerError(f"could not encode the request ({type(e).__name__}: {e}).", handler=handler.name) from e
    if limit is not None and len(body) > limit:
        raise RequestTooLarge(len(body), limit, endpoint=endpoint)
    return Request(endpoint, body, handler.content_type, handler.accepts, options.headers(stream), stream,
                   options.boto_kwargs(stream))


def _call_kwargs(request: Request) -> dict[str, Any]:
    return {"EndpointName": request.endpoint, "Body": request.body, "ContentType": request.content_type,
            "Accept": request.accept, **request.invoke_params}


def invoke(session: Session, endpoint: str, prompt: Prompt, handler: ContentHandler,
           params: dict[str, Any] | None = None, options: InvokeOptions | None = None,
           dry_run: bool = False) -> Result:
    """One call; returns the decoded :class:`Result`."""
    if params is None:  # the caller's dict otherwise, even empty: a batch's items share it
        params = {}
    request = build_request(endpoint, prompt, handler, params, options)
    if dry_run:
        return Result("", endpoint, handler.name, params=params, request=request, dry_run=True)
    client = session.runtime
    start = time.perf_counter()
    try:
        response = client.invoke_endpoint(**_call_kwargs(request))
        body = response["Body"].read()
    except Exception as e:
        raise translate(e, endpoint=endpoint, region=session.region, streamed=False) from e
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
    also after an error or :meth:`close` (then it holds the text that arrived).

    A stream that ends cleanly without its container's end marker (see ``end_marker`` on the
    preset handlers) gives a Result with ``truncated=True``: its text is not the whole answer.
    """

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
        decoder = StreamDecoder(self.handler)
        try:
            try:
                response = self.session.runtime.invoke_endpoint_with_response_stream(**_call_kwargs(self.request))
            except Exception as e:
                raise translate(e, endpoint=endpoint, region=self.session.region, streamed=True) from e
            self._body = response["Body"]
            parts = (event["PayloadPart"]["Bytes"] for event in self._body if "PayloadPart" in event)
            try:
                for out in decoder.decode(parts):
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
                raise translate(e, endpoint=endpoint, region=self.session.region, partial=self.text,
                                streamed=True) from e
            finished = True
        finally:
            self.result = Result(
                self.text, endpoint, self.handler.name, latency=time.perf_counter() - start,
                variant=response.get("InvokedProductionVariant"), usage=usage or None, params=self.params,
                request=self.request, content_type=response.get("ContentType"), streamed=True,
                interrupted=not finished, truncated=finished and decoder.truncated, first_token=first,
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
