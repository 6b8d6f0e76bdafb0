"""The frame encoder, checked by botocore's own decoder."""

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from sm_magic.local import eventstream


def decode(data: bytes) -> list:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_payload_part_decodes_with_botocore():
    [message] = decode(eventstream.payload_part(b'data:{"token": {"text": "h\xc3\xa9"}}\n'))
    assert message.headers == {":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                               ":message-type": "event"}
    assert message.payload == b'data:{"token": {"text": "h\xc3\xa9"}}\n'


def test_exception_frame_carries_type_and_fields():
    [message] = decode(eventstream.exception_frame("ModelStreamError", {"Message": "boom", "ErrorCode": "X"}))
    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "ModelStreamError"
    assert message.payload == b'{"Message": "boom", "ErrorCode": "X"}'


def test_frames_split_anywhere_reassemble():
    data = eventstream.payload_part(b"one") + eventstream.payload_part(b"two")
    buffer = EventStreamBuffer()
    payloads = []
    for i in range(len(data)):
        buffer.add_data(data[i : i + 1])
        payloads += [m.payload for m in buffer]
    assert payloads == [b"one", b"two"]


def test_corrupt_frame_fails_botocore_crc_check():
    with pytest.raises(ChecksumMismatch):
        decode(eventstream.corrupt(eventstream.payload_part(b"x")))
