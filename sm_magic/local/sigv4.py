"""Server-side SigV4 check: recompute the signature with botocore's signer and compare."""

from __future__ import annotations

import hmac
import re

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<signature>[0-9a-f]+)"
)


class SignatureProblem(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def verify(method: str, path: str, headers: dict[str, str], body: bytes, secrets: dict[str, str]) -> None:
    """Raise :class:`SignatureProblem` unless the request is signed by a known key."""
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
