"""Server-side SigV4 check: recompute the signature with botocore's signer and compare.

As on AWS, a signature whose ``X-Amz-Date`` is more than five minutes away from the server's clock is
refused even when it is otherwise right.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<signature>[0-9a-f]+)"
)
STAMP = "%Y%m%dT%H%M%SZ"
MAX_SKEW = timedelta(minutes=5)


class SignatureProblem(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def check_clock(amz_date: str, now: datetime | None = None) -> None:
    """Raise :class:`SignatureProblem` when ``amz_date`` is more than 5 minutes from ``now``, in AWS's words."""
    now = now or datetime.now(UTC)
    try:
        signed = datetime.strptime(amz_date, STAMP).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureProblem(
            "IncompleteSignatureException", f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
        ) from None
    if signed < now - MAX_SKEW:
        raise SignatureProblem(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {(now - MAX_SKEW).strftime(STAMP)} "
            f"({now.strftime(STAMP)} - 5 min.)",
        )
    if signed > now + MAX_SKEW:
        raise SignatureProblem(
            "InvalidSignatureException",
            f"Signature not yet current: {amz_date} is still later than {(now + MAX_SKEW).strftime(STAMP)} "
            f"({now.strftime(STAMP)} + 5 min.)",
        )


def verify(method: str, path: str, headers: dict[str, str], body: bytes, secrets: dict[str, str],
           now: datetime | None = None) -> None:
    """Raise :class:`SignatureProblem` unless the request is signed by a known key, within 5 minutes of ``now``."""
    match = _AUTH.match(headers.get("authorization", ""))
    if not match:
        raise SignatureProblem("MissingAuthenticationTokenException", "Missing Authentication Token")
    secret = secrets.get(match["key"])
    if secret is None:
        raise SignatureProblem(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    signed = match["signed"].split(";")
    request = AWSRequest(
        method=method,
        url=f"http://{headers.get('host', 'localhost')}{path}",
        headers={name: headers[name] for name in signed if name in headers},
        data=body,
    )
    request.context["timestamp"] = headers.get("x-amz-date", "")
    signer = SigV4Auth(Credentials(match["key"], secret), match["service"], match["region"])
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureProblem(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    check_clock(headers.get("x-amz-date", ""), now)
