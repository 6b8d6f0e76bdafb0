"""PayloadPart bytes → complete lines → text, whatever the slicing.

A part may end inside a line or inside a UTF-8 character; the last line may have no newline
(it is flushed at the end, never waited for). ``data:`` prefixes, ``[DONE]``, blank lines and
SSE fields (``event:``, ``id:``, ``retry:``, ``:`` comments) are handled here; what a line
*means* is the handler's job (:meth:`ContentHandler.decode_event`), including which event is the
container's last (its end marker): a stream that ends without it is truncated.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

from sm_magic.errors import HandlerError, StreamError
from sm_magic.handlers.base import ContentHandler, Output

_SSE_FIELDS = ("event:", "id:", "retry:", ":")
DONE = "[DONE]"


class LineSplitter:
    """Incremental bytes → lines, tolerant of any split (including inside a UTF-8 character)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(data)
        *lines, self._pending = text.split("\n")
        return lines

    def flush(self) -> list[str]:
        """The unterminated last line, if any. Raises UnicodeDecodeError on a cut-off character."""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [text] if text else []


def payload_of(line: str) -> str | None:
    """The data of one line: None for framing (blank, SSE fields), ``DONE`` for ``[DONE]``."""
    line = line.strip()
    if not line or (line.startswith(_SSE_FIELDS) and not line.startswith("data:")):
        return None
    if line.startswith("data:"):
        line = line[5:].strip()
        if not line:
            return None
    return line


def has_end_marker(handler: ContentHandler) -> bool:
    """Whether the handler's container ends every complete stream with a marker (``end_marker`` names it).

    Custom and LangChain handlers declare none, so their streams are never called truncated.
    """
    return bool(handler.streams and getattr(handler, "end_marker", None))


class StreamDecoder:
    """PayloadPart bytes → :class:`Output` in arrival order, remembering whether the end marker came.

    An event is the end marker when its handler returns it with ``final`` set (the container's last
    event), or when the stream says ``data: [DONE]``. :attr:`truncated` is meaningful once the parts
    are exhausted: a stream that ended cleanly without its marker was cut short.
    """

    def __init__(self, handler: ContentHandler):
        self.handler = handler
        self.ended = False

    @property
    def truncated(self) -> bool:
        return has_end_marker(self.handler) and not self.ended

    def decode(self, parts: Iterable[bytes]) -> Iterator[Output]:
        """Outputs in arrival order. Raises StreamError for an in-band error event."""
        handler = self.handler
        if not handler.streams:
            yield handler.decode(b"".join(parts))
            self.ended = True
            return
        splitter = LineSplitter()
        for part in parts:
            try:
                lines = splitter.feed(part)
            except UnicodeDecodeError as e:
                raise HandlerError(f"the stream is not UTF-8 ({e}).", handler=handler.name, body=part) from None
            for out in self._outputs(lines):
                if out == DONE:
                    return
                yield out
        try:
            tail = splitter.flush()
        except UnicodeDecodeError as e:
            raise HandlerError(f"the stream ended inside a UTF-8 character ({e}).", handler=handler.name) from None
        for out in self._outputs(tail):
            if out == DONE:
                return
            yield out

    def _outputs(self, lines: list[str]) -> Iterator[Output | str]:
        for line in lines:
            payload = payload_of(line)
            if payload is None:
                continue
            if payload == DONE:
                self.ended = True
                yield DONE
                return
            out = self.handler.decode_event(payload)
            if out is not None:
                out = _checked(out)
                if getattr(out, "final", False):
                    self.ended = True
                yield out


def decode_stream(parts: Iterable[bytes], handler: ContentHandler) -> Iterator[Output]:
    """Outputs in arrival order. Raises StreamError for an in-band error event."""
    return StreamDecoder(handler).decode(parts)


def _checked(out: Output) -> Output:
    if out.finish_reason == "error":
        raise StreamError(f"The container reported an error in the stream ({out.data}).")
    return out
