"""The content-handler protocol: encode a request, decode an answer, decode one streamed event.

Handlers also answer LangChain's ``LLMContentHandler`` duck type (``content_type``, ``accepts``,
``transform_input``, ``transform_output``), so a preset can be handed to LangChain and a
LangChain handler can be handed to sm_magic (see :class:`LangChainHandler`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sm_magic.errors import HandlerError

Prompt = str | list[dict[str, Any]]


@dataclass
class Output:
    """What a handler read from a body or a streamed event."""

    text: str = ""
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    data: Any = None  # e.g. an embedding vector
    final: bool = False  # the container's end marker: a stream that ends without one is truncated


class Body(bytes):
    """Response bytes that can also be ``.read()``, as LangChain handlers expect a StreamingBody."""

    def read(self, amt: int | None = None) -> bytes:
        return bytes(self)


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def as_text(prompt: Prompt) -> str:
    """Flatten chat messages for a completion-style container."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


class ContentHandler:
    """Base class of the presets and of user handlers that want token streaming.

    Subclasses implement :meth:`encode`, :meth:`decode` and, to stream token by token,
    :meth:`decode_event` (one streamed line, already stripped of ``data:``).
    """

    name = "custom"
    content_type = "application/json"
    accepts = "application/json"
    chat = False  # sends messages rather than a prompt string
    streams = True  # decode_event reads streamed lines; False: the whole body is decoded at the end
    custom_attributes: str | None = None  # sent unless the caller gives its own

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        raise NotImplementedError

    def decode(self, body: bytes) -> Output:
        raise NotImplementedError

    def decode_event(self, payload: str) -> Output | None:
        """One streamed line's payload → text (None: nothing to show)."""
        return self.decode(payload.encode())

    # LangChain's LLMContentHandler duck type
    def transform_input(self, prompt: Prompt, model_kwargs: dict[str, Any]) -> bytes:
        return self.encode(prompt, model_kwargs)

    def transform_output(self, output: Any) -> str:
        body = output.read() if hasattr(output, "read") else output
        return self.decode(body).text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class JSONHandler(ContentHandler):
    """Helpers for JSON bodies: parse with a clear error naming this handler."""

    def load(self, body: bytes | str) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raw = body.encode() if isinstance(body, str) else bytes(body)
            raise HandlerError(f"the answer is not JSON ({e}).", handler=self.name, body=raw) from None

    def shape_error(self, expected: str, body: bytes | str) -> HandlerError:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        return HandlerError(f"expected {expected}.", handler=self.name, body=raw)


class LangChainHandler(ContentHandler):
    """Wraps any object with LangChain's handler interface; it is called unchanged.

    ``transform_output`` gets the whole body as bytes that also have ``.read()`` (the seed's
    handler calls ``output.read()``). When streaming, the body is collected and decoded once.
    """

    streams = False

    def __init__(self, handler: Any, name: str = "custom"):
        self.handler = handler
        self.name = name
        self.content_type = getattr(handler, "content_type", "application/json")
        self.accepts = getattr(handler, "accepts", "application/json")

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        try:
            body = self.handler.transform_input(as_text(prompt), params)
        except Exception as e:
            raise HandlerError(f"transform_input raised {type(e).__name__}: {e}", handler=self.name) from e
        return body.encode() if isinstance(body, str) else body

    def decode(self, body: bytes) -> Output:
        try:
            answer = self.handler.transform_output(Body(body))
        except Exception as e:
            raise HandlerError(
                f"transform_output raised {type(e).__name__}: {e}", handler=self.name, body=body
            ) from e
        return Output(text=answer if isinstance(answer, str) else str(answer), data=answer)


class LLMContentHandler:
    """LangChain's handler base, without LangChain: subclass it as the seed does.

    Set ``content_type`` and ``accepts``; implement ``transform_input(prompt, model_kwargs) -> bytes``
    and ``transform_output(output) -> str`` (``output.read()`` gives the body).
    """

    content_type: str | None = "text/plain"
    accepts: str | None = "text/plain"

    def transform_input(self, prompt: Any, model_kwargs: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def transform_output(self, output: Any) -> Any:
        raise NotImplementedError


def adapt(handler: Any, name: str | None = None) -> ContentHandler:
    """Our handler as is; anything with transform_input/transform_output wrapped."""
    if isinstance(handler, ContentHandler):
        return handler
    if hasattr(handler, "transform_input") and hasattr(handler, "transform_output"):
        return LangChainHandler(handler, name or type(handler).__name__)
    raise TypeError(
        f"{type(handler).__name__} is not a content handler: it needs transform_input and transform_output"
    )
