"""The few private attributes of boto3/botocore that sm_magic relies on, in one place.

Each has no public equivalent; tests/test_botocore_private.py pins them so that an upgrade that
moves one fails there, not in a user's notebook.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def core_session(boto_session: Any) -> Any:
    """The botocore session behind a ``boto3.Session`` (to create STS clients for assume-role)."""
    return boto_session._session


def boto_session_with(credentials: Any, region: str | None) -> Any:
    """A ``boto3.Session`` whose credentials are the given (refreshing) credentials object."""
    import boto3
    import botocore.session

    core = botocore.session.Session()
    core._credentials = credentials
    return boto3.Session(botocore_session=core, region_name=region)


def client_credentials(client: Any) -> Any:
    """The credentials a boto3 client signs with (None if it has none)."""
    return client._get_credentials()


def expiry(credentials: Any) -> datetime | None:
    """When refreshing credentials expire (None for static ones)."""
    return getattr(credentials, "_expiry_time", None)
