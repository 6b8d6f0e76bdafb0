"""The private boto3/botocore attributes sm_magic relies on still exist and mean what we think (an upgrade
that moves one fails here, not in a notebook)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import botocore.session
from botocore.credentials import RefreshableCredentials

from sm_magic import botocore_private as private
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET


def test_core_session_is_the_botocore_session_behind_boto3():
    session = boto3.Session(region_name="us-east-1")
    assert isinstance(private.core_session(session), botocore.session.Session)


def test_a_boto3_session_signs_with_the_given_credentials_and_a_client_reports_them():
    expires = datetime.now(UTC) + timedelta(hours=1)
    creds = RefreshableCredentials.create_from_metadata(
        {"access_key": FAKE_KEY_ID, "secret_key": FAKE_SECRET, "token": "t", "expiry_time": expires.isoformat()},
        refresh_using=lambda: {}, method="assume-role")
    session = private.boto_session_with(creds, "us-west-2")
    assert session.region_name == "us-west-2" and session.get_credentials() is creds
    client = session.client("sagemaker-runtime")
    assert private.client_credentials(client).access_key == FAKE_KEY_ID
    assert private.expiry(creds) == expires
    static = boto3.Session(aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET,
                           region_name="us-east-1").get_credentials()
    assert private.expiry(static) is None
