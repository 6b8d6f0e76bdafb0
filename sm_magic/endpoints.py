"""The control plane: list and describe endpoints (client ``sagemaker``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sm_magic.errors import translate
from sm_magic.handlers.detect import detect
from sm_magic.session import Session


def _describe_row(session: Session, item: dict[str, Any]) -> dict[str, Any]:
    name = item["EndpointName"]
    row: dict[str, Any] = {"name": name, "status": item.get("EndpointStatus"),
                           "created": item["CreationTime"].strftime("%Y-%m-%d %H:%M")}
    try:
        described = session.sagemaker.describe_endpoint(EndpointName=name)
        config = session.sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        variant = config["ProductionVariants"][0]
        row["instance"] = f"{variant.get('InstanceType', 'serverless')} × {variant.get('InitialInstanceCount', 1)}"
        row["async"] = "yes" if config.get("AsyncInferenceConfig") else ""
        row["format"] = detect(session.sagemaker, name).handler
    except Exception as e:  # one endpoint's details failing must not hide the others
        row["format"] = f"? ({translate(e, endpoint=name).message[:60]})"
    return row


def list_endpoints(session: Session, name_contains: str = "", details: bool = True) -> list[dict[str, Any]]:
    """Endpoints with status, creation time, instance type and detected handler."""
    try:
        pages = session.sagemaker.get_paginator("list_endpoints").paginate(NameContains=name_contains)
        items = [item for page in pages for item in page["Endpoints"]]
    except Exception as e:
        raise translate(e, region=session.region) from e
    if not details:
        return [{"name": i["EndpointName"], "status": i.get("EndpointStatus")} for i in items]
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(items)))) as pool:
        return list(pool.map(lambda item: _describe_row(session, item), items))


def endpoint_and_config(session: Session, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """DescribeEndpoint and DescribeEndpointConfig of one endpoint, errors translated."""
    sm = session.sagemaker
    try:
        described = sm.describe_endpoint(EndpointName=name)
        return described, sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    except Exception as e:
        raise translate(e, endpoint=name, region=session.region) from e


def describe_endpoint(session: Session, name: str) -> dict[str, Any]:
    """Status, variants, model, image and detected handler of one endpoint."""
    sm = session.sagemaker
    described, config = endpoint_and_config(session, name)
    detection = detect(sm, name)
    variants = ", ".join(
        f"{v['VariantName']} ({v.get('CurrentInstanceCount', '?')} instance(s))"
        for v in described.get("ProductionVariants", [])
    )
    first = config["ProductionVariants"][0]
    return {
        "name": name, "status": described["EndpointStatus"], "variants": variants,
        "instance type": first.get("InstanceType"), "model": detection.model,
        "image": detection.image, "handler (detected)": f"{detection.handler} — {detection.reason}",
        "async output": _async_output(config),
        "created": described["CreationTime"].isoformat(timespec="seconds"),
    }


def _async_output(config: dict[str, Any]) -> str:
    """Where an async endpoint writes answers and failures; "no (real-time)" for the others."""
    output = (config.get("AsyncInferenceConfig") or {}).get("OutputConfig")
    if output is None:
        return "no (real-time)"
    return f"{output.get('S3OutputPath')} (failures: {output.get('S3FailurePath') or 'with the answers'})"


def instance_count(session: Session, name: str) -> int:
    """How many instances serve the endpoint (sizes the default batch concurrency)."""
    try:
        described = session.sagemaker.describe_endpoint(EndpointName=name)
    except Exception:
        return 1
    return sum(v.get("CurrentInstanceCount", 1) for v in described.get("ProductionVariants", [])) or 1
