"""Sessions: profiles, static keys, external clients, refreshing assume-role, botocore Config, secrets."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from sm_magic.calls import invoke
from sm_magic.commands.session import describe
from sm_magic.errors import CredentialsError, ReadTimeout, ValidationFailed
from sm_magic.handlers.registry import Registry
from sm_magic.local import Fault
from sm_magic.options import InvokeOptions
from sm_magic.session import Session, SessionSettings
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN

TGI = Registry().get("tgi")


def test_clients_are_made_once_per_session(session):
    assert session.runtime is session.runtime
    assert session.client("sagemaker") is session.sagemaker
    assert session.runtime is not Session.local(session.settings.endpoint_url).runtime


def test_config_is_chosen_on_purpose_and_overridable(session):
    config = session.runtime.meta.config
    assert config.read_timeout >= 70
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert config.max_pool_connections >= 16
    custom = Session(SessionSettings(region="us-east-1", botocore_config=Config(read_timeout=5)))
    assert custom.runtime.meta.config.read_timeout == 5
    assert custom.runtime.meta.config.retries["mode"] == "standard"  # the rest kept


def test_the_endpoint_validates_what_the_client_does_not_check(local):
    """The runtime client skips botocore's parameter validation (typed requests, less CPU per call): a
    value too long reaches SageMaker, whose ValidationError names it; the user's Config can turn it on."""
    session = Session.local(local.url)
    assert session._config("sagemaker-runtime").parameter_validation is False
    assert session._config("sagemaker").parameter_validation is True
    checked = Session.local(local.url, botocore_config=Config(parameter_validation=True))
    assert checked._config("sagemaker-runtime").parameter_validation is True
    too_long = InvokeOptions(custom_attributes="x" * 1025)
    with pytest.raises(ValidationFailed, match=r"customAttributes.*less than or equal to 1024"):
        invoke(session, "tgi", "hi", TGI, {}, too_long)


def test_profile_and_region_from_aws_files(aws_env, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    (tmp_path / "config").write_text("[profile team]\nregion = eu-west-1\n")
    (tmp_path / "credentials").write_text("[team]\naws_access_key_id = team-key-9999\naws_secret_access_key = s\n")
    s = Session(SessionSettings(profile="team"))
    assert s.region == "eu-west-1"
    assert invoke(s, "tgi", "hi", TGI).text == "You said: hi"
    assert describe(s)["access_key"] == "…9999"


def test_unknown_profile_is_a_credentials_error(aws_env):
    with pytest.raises(CredentialsError) as info:
        _ = Session(SessionSettings(profile="nobody")).runtime
    assert "(nobody) could not be found" in info.value.explain()
    assert "list-profiles" in info.value.explain()


def test_static_keys_never_appear_in_reprs_or_descriptions(local):
    s = Session(SessionSettings(region="us-east-1", endpoint_url=local.url, access_key_id=FAKE_KEY_ID,
                                secret_access_key=FAKE_SECRET, session_token=FAKE_TOKEN, external_id="ext-secret"))
    invoke(s, "tgi", "hi", TGI)
    shown = " ".join([repr(s), str(s), repr(s.settings), str(describe(s))])
    for secret in (FAKE_SECRET, FAKE_TOKEN, FAKE_KEY_ID, "ext-secret"):
        assert secret not in shown
    assert FAKE_KEY_ID[-4:] in shown


def test_external_client_and_boto_session_are_used(local):
    client = boto3.client("sagemaker-runtime", endpoint_url=local.url, region_name="eu-central-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
    s = Session(client=client)
    assert s.runtime is client and s.region == "eu-central-1"
    assert invoke(s, "tgi", "hi", TGI).text == "You said: hi"
    boto = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
    s2 = Session(SessionSettings(endpoint_url=local.url), boto_session=boto)
    assert invoke(s2, "tgi", "hi", TGI).text == "You said: hi"


def test_role_arn_credentials_refresh_before_they_expire(local, moto_server):
    """Assumed for 900 s, the credentials are inside botocore's 15-minute refresh window at once,
    so every use refreshes them: STS is called again and later calls still succeed."""
    settings = SessionSettings(region="us-east-1", endpoint_url=local.url, control_endpoint_url=moto_server,
                               access_key_id="source-key", secret_access_key="source-secret",
                               role_arn="arn:aws:iam::123456789012:role/notebook", external_id="ext-1",
                               role_session_name="nb", duration_seconds=900)
    s = Session(settings)
    credentials = s.boto_session.get_credentials()
    assert invoke(s, "tgi", "hi", TGI).text == "You said: hi"
    first = credentials.get_frozen_credentials().access_key
    assert invoke(s, "tgi", "hi", TGI).text == "You said: hi"
    second = credentials.get_frozen_credentials().access_key
    assert first != second and "source-key" not in (first, second)
    assert describe(s)["credentials"] == "assume-role"
    assert "expires" in describe(s)


def test_role_without_source_credentials_says_so(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsError, match="no source credentials"):
        _ = Session(SessionSettings(region="us-east-1", role_arn="arn:aws:iam::1:role/x")).runtime


def test_read_timeout_is_not_retried_by_default(local):
    s = Session.local(local.url, read_timeout=0.3)
    local.inject("faulty", Fault("latency", seconds=0.8, times=3))
    before = local.calls["faulty"]
    with pytest.raises(ReadTimeout):
        invoke(s, "faulty", "hi", TGI)
    assert local.calls["faulty"] - before == 1  # a slow model is not invoked three times


def test_read_timeout_retries_when_asked(local):
    s = Session.local(local.url, read_timeout=0.3, retry_read_timeouts=True, max_attempts=2)
    local.inject("faulty", Fault("latency", seconds=0.8, times=1))
    before = local.calls["faulty"]
    assert invoke(s, "faulty", "hi", TGI).text == "You said: hi"
    assert local.calls["faulty"] - before == 2


def test_with_changes_rejects_unknown_settings(session):
    from sm_magic.errors import ConfigError

    with pytest.raises(ConfigError, match="colour"):
        session.with_changes(colour="blue")
    assert session.with_changes(read_timeout=5).settings.read_timeout == 5


def test_a_forked_child_calls_through_connections_of_its_own(local):
    """Hostile pass: a forked child reused the parent's pooled sockets, so the two got each other's answers."""
    import multiprocessing

    session, tgi = Session.local(local.url), Registry().get("tgi")
    invoke(session, "tgi", "warm", tgi)  # the parent's pool holds a connection now
    ctx = multiprocessing.get_context("fork")
    wrong = ctx.Value("i", -1)

    def in_child() -> None:
        wrong.value = sum(f"child {i}." not in invoke(session, "tgi", f"child {i}.", tgi).text for i in range(40))

    child = ctx.Process(target=in_child)
    child.start()
    mine = sum(f"parent {i}." not in invoke(session, "tgi", f"parent {i}.", tgi).text for i in range(40))
    child.join(60)
    assert (child.exitcode, wrong.value, mine) == (0, 0, 0)
