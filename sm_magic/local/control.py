"""The control plane (SageMaker JSON 1.1 describe/list calls) and STS (query protocol, XML answers).

Pure answers: a request in, a dict (or XML bytes) out; :class:`~sm_magic.local.http.ApiError` for the
errors AWS returns. Served endpoints are described as real deployments of their container would be.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from sm_magic.local.config import ServerConfig
from sm_magic.local.http import ApiError
from sm_magic.local.runtime import ServedEndpoint

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def timestamp(value: object) -> float:
    """``json.dumps`` default for datetimes (JSON 1.1 sends epoch seconds)."""
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(type(value))


def model_environment(fmt: str) -> dict[str, str]:
    """What real deployments of each format set (detection reads it)."""
    if fmt.startswith("tgi"):
        env = {"HF_MODEL_ID": "HuggingFaceTB/SmolLM2-135M-Instruct", "SM_NUM_GPUS": "1"}
        if fmt == "tgi-messages":
            env["MESSAGES_API_ENABLED"] = "true"
        return env
    if fmt.startswith("lmi"):
        return {"HF_MODEL_ID": "HuggingFaceTB/SmolLM2-135M-Instruct", "OPTION_ROLLING_BATCH": "vllm"}
    if fmt == "tei-embedding":
        return {"HF_MODEL_ID": "sentence-transformers/all-MiniLM-L6-v2"}
    return {"SAGEMAKER_PROGRAM": "inference.py"}


def model_name(ep: ServedEndpoint) -> str:
    return f"{ep.container.model_name}-{ep.spec.name}"


def control_plane_answer(config: ServerConfig, endpoints: Mapping[str, ServedEndpoint], op: str,
                         request: dict) -> dict:
    """The answer to SageMaker control-plane operation ``op``."""
    arn = f"arn:aws:sagemaker:{config.region}:{config.account}"

    def find(name: str, kind: str) -> ServedEndpoint:
        for ep in endpoints.values():
            if name in (ep.spec.name, f"{ep.spec.name}-config", model_name(ep)):
                return ep
        raise ApiError(400, "ValidationException", f'Could not find {kind} "{name}".')

    if op == "ListEndpoints":
        items = [
            {"EndpointName": name, "EndpointArn": f"{arn}:endpoint/{name}", "CreationTime": CREATED,
             "LastModifiedTime": CREATED, "EndpointStatus": ep.spec.status}
            for name, ep in sorted(endpoints.items())
            if request.get("NameContains", "") in name
        ]
        return {"Endpoints": items[: request.get("MaxResults", 100)]}
    if op == "DescribeEndpoint":
        ep = find(request["EndpointName"], "endpoint")
        name = ep.spec.name
        return {
            "EndpointName": name, "EndpointArn": f"{arn}:endpoint/{name}",
            "EndpointConfigName": f"{name}-config", "EndpointStatus": ep.spec.status,
            "CreationTime": CREATED, "LastModifiedTime": CREATED,
            "ProductionVariants": [
                {"VariantName": v, "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                 "CurrentInstanceCount": ep.spec.instance_count, "DesiredInstanceCount": ep.spec.instance_count}
                for v in ep.spec.variants
            ],
        }
    if op == "DescribeEndpointConfig":
        ep = find(request["EndpointConfigName"], "endpoint configuration")
        name = ep.spec.name
        answer = {
            "EndpointConfigName": f"{name}-config", "EndpointConfigArn": f"{arn}:endpoint-config/{name}-config",
            "CreationTime": CREATED,
            "ProductionVariants": [
                {"VariantName": v, "ModelName": model_name(ep), "InstanceType": ep.spec.instance_type,
                 "InitialInstanceCount": ep.spec.instance_count}
                for v in ep.spec.variants
            ],
        }
        if ep.spec.async_:
            answer["AsyncInferenceConfig"] = {
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": config.async_workers},
                "OutputConfig": {"S3OutputPath": ep.spec.output_path, "S3FailurePath": ep.spec.failure_path},
            }
        return answer
    if op == "DescribeModel":
        ep = find(request["ModelName"], "model")
        return {
            "ModelName": model_name(ep), "ModelArn": f"{arn}:model/{model_name(ep)}",
            "CreationTime": CREATED, "ExecutionRoleArn": f"arn:aws:iam::{config.account}:role/local",
            "PrimaryContainer": {"Image": ep.container.image, "Environment": model_environment(ep.spec.format)},
        }
    if op == "ListInferenceComponents":
        items = [
            {"InferenceComponentName": c, "EndpointName": ep.spec.name, "VariantName": ep.spec.variants[0],
             "InferenceComponentStatus": "InService", "CreationTime": CREATED, "LastModifiedTime": CREATED,
             "InferenceComponentArn": f"{arn}:inference-component/{c}", "EndpointArn": f"{arn}:endpoint/{ep.spec.name}"}
            for ep in endpoints.values() for c in ep.spec.inference_components
            if request.get("EndpointNameEquals") in (None, ep.spec.name)
        ]
        return {"InferenceComponents": items}
    raise ApiError(400, "UnknownOperationException", f"The local endpoint does not implement {op}.")


def sts_answer(config: ServerConfig, assumed: dict[str, str], form: dict[str, str], authorization: str) -> bytes:
    """STS GetCallerIdentity and AssumeRole as XML; ``assumed`` maps issued key ids to assumed-role ARNs."""
    action = form.get("Action")
    account = config.account
    if action == "GetCallerIdentity":
        key = re.search(r"Credential=([^/]+)/", authorization)
        arn = assumed.get(key.group(1) if key else "", f"arn:aws:iam::{account}:user/local")
        result = f"<Arn>{escape(arn)}</Arn><UserId>AIDALOCALUSER</UserId><Account>{account}</Account>"
    elif action == "AssumeRole":
        duration = int(form.get("DurationSeconds", 3600))
        if not 900 <= duration <= 43200:
            raise ApiError(400, "ValidationError", "DurationSeconds must be between 900 and 43200.")
        key = "ASIA" + uuid.uuid4().hex[:16].upper()
        role, name = form.get("RoleArn", ""), form.get("RoleSessionName", "session")
        arn = f"{role.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/')}/{name}"
        assumed[key] = arn
        expires = (datetime.now(UTC) + timedelta(seconds=duration)).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = (f"<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{uuid.uuid4().hex}"
                  f"</SecretAccessKey><SessionToken>{uuid.uuid4().hex}</SessionToken>"
                  f"<Expiration>{expires}</Expiration></Credentials>"
                  f"<AssumedRoleUser><Arn>{escape(arn)}</Arn><AssumedRoleId>AROALOCAL:{escape(name)}"
                  "</AssumedRoleId></AssumedRoleUser>")
    else:
        raise ApiError(400, "InvalidAction", f"Could not find operation {action}")
    return (f'<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><{action}Result>{result}'
            f"</{action}Result><ResponseMetadata><RequestId>local</RequestId></ResponseMetadata>"
            f"</{action}Response>").encode()
