"""The S3 side of async inference: read request objects, write answer and failure objects.

Talks to the S3-compatible service the server is configured with (``s3_endpoint_url``; moto's server in
tests) with boto3 and the local fake credentials, path-style, never to AWS.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from sm_magic.local.http import ApiError

KEY, SECRET = "local-access-key", "local-secret"  # fake: the local S3 service accepts any


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` (or a path-style ``https://host/bucket/key``) → (bucket, key)."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return parts.netloc, parts.path.lstrip("/")
    if parts.scheme in ("http", "https"):
        bucket, _, key = parts.path.lstrip("/").partition("/")
        return bucket, key
    raise ApiError(400, "ValidationError", f"Input location {uri} is not an S3 URI (s3://bucket/key).")


class ObjectStore:
    """A boto3 S3 client on the configured service, made on first use (boto3 clients are thread-safe)."""

    def __init__(self, endpoint_url: str, region: str):
        self.endpoint_url, self.region = endpoint_url, region
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:  # a boto3 S3 client (its class is generated at run time)
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region, aws_access_key_id=KEY,
                    aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"},
                                                                retries={"mode": "standard"}))
            return self._client

    def read(self, uri: str) -> bytes:
        bucket, key = split_uri(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def write(self, uri: str, body: bytes, content_type: str) -> None:
        bucket, key = split_uri(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def ensure_bucket(self, uri: str) -> None:
        """Create the bucket of ``uri`` when the local service does not have it yet."""
        from botocore.exceptions import ClientError

        bucket, _ = split_uri(uri)
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            kwargs = {} if self.region == "us-east-1" else {
                "CreateBucketConfiguration": {"LocationConstraint": self.region}}
            self.client.create_bucket(Bucket=bucket, **kwargs)
