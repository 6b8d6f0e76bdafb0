"""Where calls go and with which credentials: settings → one set of cached boto3 clients.

A :class:`Session` is built from :class:`SessionSettings` (profile, region, static keys, role ARN,
endpoint URLs, botocore ``Config`` knobs) or from objects the user already has (a boto3 client or
``boto3.Session``). boto3 is imported on first use, not at import time. Secrets live in memory
only: reprs and :meth:`Session.describe` show at most the access key id's last four characters.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

from sm_magic import botocore_private as private
from sm_magic.errors import ConfigError, CredentialsError, translate
from sm_magic.params import BY_NAME

LOCAL_KEY = "local-access-key"
LOCAL_SECRET = "local-secret"


def mask(key: str | None) -> str:
    """``AKIA…WXYZ``-style: only the last four characters of an access key id."""
    return f"…{key[-4:]}" if key else ""


@dataclass
class SessionSettings:
    """Everything that decides how clients are made. Secrets are never printed."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None  # sagemaker-runtime
    control_endpoint_url: str | None = None  # sagemaker and sts (set with endpoint_url by --local)
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    role_session_name: str = "sm-magic"
    duration_seconds: int = 3600
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    read_timeout: float = BY_NAME["read_timeout"].default
    connect_timeout: float = BY_NAME["connect_timeout"].default
    max_attempts: int = BY_NAME["max_attempts"].default
    retry_mode: str = BY_NAME["retry_mode"].default
    retry_read_timeouts: bool = BY_NAME["retry_read_timeouts"].default
    max_pool_connections: int = BY_NAME["max_pool_connections"].default
    botocore_config: Any = field(default=None, repr=False)  # a botocore Config merged over ours

    SECRET_FIELDS = ("secret_access_key", "session_token", "external_id")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr and getattr(self, f.name)}
        if self.access_key_id:
            shown["access_key_id"] = mask(self.access_key_id)
        return "SessionSettings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


_SESSIONS: weakref.WeakSet[Session] = weakref.WeakSet()


def _in_forked_child() -> None:
    for session in list(_SESSIONS):
        session._start_fresh()


os.register_at_fork(after_in_child=_in_forked_child)


class Session:
    """Cached boto3 clients for one set of settings. Cheap to create; clients made on first use."""

    def __init__(self, settings: SessionSettings | None = None, *, client: Any = None,
                 boto_session: Any = None):
        self.settings = settings or SessionSettings()
        self._external_client = client
        self._external_boto_session = boto_session
        self._start_fresh()
        _SESSIONS.add(self)
        if client is not None and self.settings.region is None:  # a copy: the caller's settings stay theirs
            self.settings = replace(self.settings, region=client.meta.region_name)

    def _start_fresh(self) -> None:
        """No clients yet; in a forked child, none of the parent's either: their pooled connections are the
        parent's sockets, and two processes reading one socket get each other's answers."""
        self._boto_session: Any = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()

    @classmethod
    def local(cls, url: str, region: str = "us-east-1", **settings: Any) -> Session:
        """A session for a local endpoint (``sm-magic serve``): fake keys, every service at ``url``."""
        return cls(SessionSettings(
            region=region, endpoint_url=url, control_endpoint_url=url,
            access_key_id=LOCAL_KEY, secret_access_key=LOCAL_SECRET, **settings,
        ))

    def with_changes(self, **changes: Any) -> Session:
        """A new session with some settings changed (clients are not shared)."""
        unknown = set(changes) - {f.name for f in fields(SessionSettings)}
        if unknown:
            raise ConfigError(f"Unknown session setting(s): {', '.join(sorted(unknown))}.")
        keep_external = not ({"profile", "role_arn", "access_key_id", "endpoint_url"} & set(changes))
        if changes.get("profile") and "access_key_id" not in changes:  # the profile's keys, not ours
            changes.update(access_key_id=None, secret_access_key=None, session_token=None)
        return Session(
            replace(self.settings, **changes),
            client=self._external_client if keep_external else None,
            boto_session=self._external_boto_session if keep_external else None,
        )

    # -- boto3 objects ---------------------------------------------------------------------
    @property
    def boto_session(self) -> Any:
        """The ``boto3.Session`` behind every client (made once)."""
        with self._lock:
            if self._boto_session is None:
                self._boto_session = self._make_boto_session()
            return self._boto_session

    def _make_boto_session(self) -> Any:
        import boto3
        from botocore import exceptions as bx

        s = self.settings
        if self._external_boto_session is not None:
            base = self._external_boto_session
        else:
            try:
                base = boto3.Session(
                    profile_name=s.profile, region_name=s.region,
                    aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key,
                    aws_session_token=s.session_token,
                )
            except bx.BotoCoreError as e:
                raise translate(e) from e
        if not s.role_arn:
            return base
        return self._assume_role(base)

    def _assume_role(self, base: Any) -> Any:
        """A boto3 session whose credentials come from AssumeRole and refresh before expiry."""
        from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

        s = self.settings
        source = base.get_credentials()
        if source is None:
            raise CredentialsError(
                f"Cannot assume {s.role_arn}: no source credentials were found.",
                hint="Set a profile or keys first (`%sagemaker session --profile NAME`).",
            )
        extra: dict[str, Any] = {"RoleSessionName": s.role_session_name, "DurationSeconds": s.duration_seconds}
        if s.external_id:
            extra["ExternalId"] = s.external_id
        sts_url = s.control_endpoint_url

        def client_creator(service: str, **kwargs: Any) -> Any:
            if sts_url:
                kwargs.setdefault("endpoint_url", sts_url)
            return private.core_session(base).create_client(service, region_name=base.region_name or s.region,
                                                            **kwargs)

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=client_creator, source_credentials=source, role_arn=s.role_arn, extra_args=extra,
        )
        credentials = DeferredRefreshableCredentials(
            method="assume-role", refresh_using=fetcher.fetch_credentials,
        )
        return private.boto_session_with(credentials, base.region_name or s.region)

    def _config(self, service: str) -> Any:
        """The client's botocore Config; the user's ``botocore_config`` has the last word.

        The runtime client skips botocore's client-side parameter validation: sm_magic builds every
        request from typed settings and checks the body itself, SageMaker validates the rest (a
        ValidationError, shown as such), and a call costs ~5% less CPU (bench/: per call).
        """
        from botocore.config import Config

        s = self.settings
        config = Config(
            read_timeout=s.read_timeout, connect_timeout=s.connect_timeout,
            retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
            max_pool_connections=s.max_pool_connections, tcp_keepalive=True,
            user_agent_extra="sm-magic/0.1", parameter_validation=service != "sagemaker-runtime",
        )
        return config.merge(s.botocore_config) if s.botocore_config is not None else config

    def client(self, service: str) -> Any:
        """A cached client for ``sagemaker-runtime``, ``sagemaker`` or ``sts``."""
        if service == "sagemaker-runtime" and self._external_client is not None:
            return self._external_client
        cached = self._clients.get(service)
        if cached is not None:
            return cached
        with self._client_lock:  # one client, even when a batch's threads all ask at once
            if service not in self._clients:
                self._clients[service] = self._make_client(service)
            return self._clients[service]

    def _make_client(self, service: str) -> Any:
        from botocore import exceptions as bx

        s = self.settings
        url = s.endpoint_url if service == "sagemaker-runtime" else s.control_endpoint_url
        session = self.boto_session
        if self._external_client is not None and self._external_boto_session is None and not s.profile:
            session = self._session_like_external_client()
        try:
            made = session.client(service, region_name=s.region or session.region_name,
                                  endpoint_url=url, config=self._config(service))
        except bx.BotoCoreError as e:
            raise translate(e) from e
        if service == "sagemaker-runtime":
            made.meta.events.register_first("needs-retry.sagemaker-runtime", partial(_runtime_retry, s))
        return made

    def _session_like_external_client(self) -> Any:
        """For control-plane calls next to an external runtime client: use its credentials."""
        import boto3

        creds = private.client_credentials(self._external_client)
        if creds is None:
            return self.boto_session
        frozen = creds.get_frozen_credentials()
        return boto3.Session(
            aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key,
            aws_session_token=frozen.token, region_name=self.settings.region,
        )

    @property
    def runtime(self) -> Any:
        return self.client("sagemaker-runtime")

    @property
    def sagemaker(self) -> Any:
        return self.client("sagemaker")

    @property
    def region(self) -> str | None:
        if self.settings.region:
            return self.settings.region
        if self._external_client is not None:
            return self._external_client.meta.region_name
        return self.boto_session.region_name

    def identity(self) -> dict[str, str]:
        """Account and ARN from STS GetCallerIdentity."""
        try:
            answer = self.client("sts").get_caller_identity()
        except Exception as e:
            raise translate(e) from e
        return {"account": answer["Account"], "arn": answer["Arn"]}

    @property
    def external(self) -> bool:
        """Calls go through a boto3 client the user gave."""
        return self._external_client is not None

    @property
    def started(self) -> bool:
        """The boto3 session exists (its region and credentials are known without a lookup)."""
        return self._boto_session is not None

    def credentials(self) -> Any:
        """The credentials calls are signed with, if a client or boto3 session exists yet."""
        if self._external_client is not None:
            return private.client_credentials(self._external_client)
        if self._boto_session is not None:
            return self._boto_session.get_credentials()
        return None

    def __repr__(self) -> str:
        return f"<sm_magic.Session {self.settings!r}>"


_caller = threading.local()
THROTTLING = ("ThrottlingException", "Throttling", "TooManyRequestsException")


@contextmanager
def throttles_surface() -> Iterator[None]:
    """Within this block (this thread), throttling errors are not retried by botocore: the caller
    (a batch's concurrency limiter) backs off instead, and sees the endpoint's capacity at once."""
    _caller.throttles_surface = True
    try:
        yield
    finally:
        _caller.throttles_surface = False


def _runtime_retry(settings: SessionSettings, attempts: int = 1, response: Any = None,
                   caught_exception: BaseException | None = None, **_: Any) -> float | bool | None:
    """needs-retry hook, before botocore's: read timeouts are not retried unless asked (a slow
    model would run three times); ModelNotReadyException (a model still loading) is retried with
    botocore's exponential backoff. None leaves the decision to botocore."""
    if caught_exception is not None:  # called for every response: import only when there is an error
        from botocore.exceptions import ReadTimeoutError

        if isinstance(caught_exception, ReadTimeoutError) and not settings.retry_read_timeouts:
            return False
    code = response[1].get("Error", {}).get("Code") if response else None
    if code in THROTTLING and getattr(_caller, "throttles_surface", False):
        return False
    if code == "ModelNotReadyException" and attempts < settings.max_attempts:
        import random

        return random.random() * min(20.0, 2.0 ** (attempts - 1))
    return None
