"""AWS event-stream frame encoder (the server side of ``botocore.eventstream``).

Pure functions: dicts and bytes in, bytes out. Frame layout: total length (4 bytes, big-endian),
headers length (4), prelude CRC32 (4), headers, payload, message CRC32 (4).
"""

from __future__ import annotations

import json
import struct
import zlib

_STRING = 7


def _encode_headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with both CRCs."""
    raw_headers = _encode_headers(headers)
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying a slice of the container's output."""
    return encode_message(
        {
            ":event-type": "PayloadPart",
            ":content-type": "application/octet-stream",
            ":message-type": "event",
        },
        data,
    )


def exception_frame(error_type: str, fields: dict[str, str]) -> bytes:
    """A modelled exception event (``ModelStreamError``, ``InternalStreamFailure``)."""
    return encode_message(
        {
            ":exception-type": error_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps(fields).encode(),
    )


def corrupt(frame: bytes) -> bytes:
    """The same frame with its message CRC broken."""
    return frame[:-4] + struct.pack(">I", zlib.crc32(frame[:-4]) ^ 0xFFFFFFFF)
