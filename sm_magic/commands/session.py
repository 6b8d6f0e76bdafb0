"""``%sagemaker session``: show or change where calls go and with which credentials."""

from __future__ import annotations

from typing import Any

from sm_magic.errors import SageMakerError
from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("--profile", help="a named profile from ~/.aws/config or ~/.aws/credentials")
    p.add_argument("--region", help="AWS region, e.g. us-west-2")
    p.add_argument("--role-arn", help="assume this role; credentials refresh before they expire")
    p.add_argument("--external-id", help="external id for the role")
    p.add_argument("--role-session-name", help="session name for the role")
    p.add_argument("--duration", type=int, help="assumed-role duration in seconds")
    p.add_argument("--endpoint-url", help="send runtime calls to this URL (VPC endpoint, local server)")
    p.add_argument("--client", metavar="VAR", help="use a boto3 sagemaker-runtime client from the notebook")
    p.add_argument("--boto-session", metavar="VAR", help="use a boto3.Session from the notebook")
    p.add_argument("--local", nargs="?", const="", metavar="URL",
                   help="use a local endpoint (sm-magic serve; default $SM_MAGIC_LOCAL_URL or 127.0.0.1:8080)")
    p.add_argument("--read-timeout", type=float, help="seconds to wait for an answer")
    p.add_argument("--reset", action="store_true", help="back to the default credential chain")


def run(ctx: Any, args: Any) -> Table:
    from sm_magic.resolve import connect, session_from_environment

    state = ctx.state
    if args.reset:
        state.set_session(session_from_environment())
    else:
        session = connect(
            state.session, local=args.local,
            client=ctx.value(args.client, "Client") if args.client else None,
            boto_session=ctx.value(args.boto_session, "boto3 session") if args.boto_session else None,
            profile=args.profile, region=args.region, role_arn=args.role_arn, external_id=args.external_id,
            role_session_name=args.role_session_name, duration_seconds=args.duration,
            endpoint_url=args.endpoint_url, read_timeout=args.read_timeout)
        if session is not state.session:
            state.set_session(session)
    return table(state.session)


def describe(session: Any) -> dict[str, Any]:
    """What a user may see about a session: never a secret."""
    from sm_magic import botocore_private
    from sm_magic.session import mask

    s = session.settings
    external = session.external
    info: dict[str, Any] = {
        "profile": s.profile or ("(external client)" if external else "(default)"),
        "region": session.region if (s.region or session.started or external) else None,
        "endpoint_url": s.endpoint_url or "(AWS)",
        "role_arn": s.role_arn,
        "read_timeout": s.read_timeout,
        "retries": f"{s.retry_mode}, {s.max_attempts} attempts",
    }
    creds = session.credentials()
    if creds is not None:
        info["credentials"] = getattr(creds, "method", "") or "explicit"
        info["access_key"] = mask(creds.get_frozen_credentials().access_key) if not s.role_arn else "(assumed role)"
        expiry = botocore_private.expiry(creds)
        if expiry is not None:
            info["expires"] = expiry.isoformat(timespec="seconds")
    elif s.access_key_id:
        info["credentials"], info["access_key"] = "static keys", mask(s.access_key_id)
    return {k: v for k, v in info.items() if v not in (None, "")}


def table(session: Any) -> Table:
    rows = [{"setting": k, "value": v} for k, v in describe(session).items()]
    try:
        identity = session.identity()
        rows += [{"setting": "account", "value": identity["account"]}, {"setting": "arn", "value": identity["arn"]}]
        rows += [{"setting": k, "value": v} for k, v in describe(session).items()
                 if k in ("credentials", "access_key", "expires") and not any(r["setting"] == k for r in rows)]
    except SageMakerError as e:
        rows.append({"setting": "identity", "value": e.explain()})
    return Table(rows, title="SageMaker session")
