"""Which preset an endpoint speaks, read from its model's container image and environment."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sm_magic.errors import translate

DEFAULT = "tgi"

# (what to look for in "image model-name env", preset): first match wins.
RULES: list[tuple[str, str]] = [
    (r"MESSAGES_API_ENABLED=true", "tgi-messages"),
    (r"meta-textgeneration-llama-2-\w+-f\b", "llama2-chat"),
    (r"djl-inference|djl-lmi|lmi\d|tensorrtllm|OPTION_ROLLING_BATCH", "lmi"),
    (r"tgi-inference|text-generation-inference|-tgi\d", "tgi"),
    (r"text2text-flan-t5|flan-t5", "flan-t5"),
    (r"huggingface-tei|text-embeddings-inference", "tei-embedding"),
    (r"textembedding|sentence-transformers|embedding", "embedding"),
]


@dataclass
class Detection:
    handler: str
    image: str
    model: str
    reason: str


def detect(sagemaker: Any, endpoint: str) -> Detection:
    """Describe the endpoint → its config → its model, then match :data:`RULES`."""
    try:
        described = sagemaker.describe_endpoint(EndpointName=endpoint)
        config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        model_name = config["ProductionVariants"][0].get("ModelName")
        if not model_name:
            return Detection(DEFAULT, "", "", "inference components: no model on the variant; using the default")
        model = sagemaker.describe_model(ModelName=model_name)
    except Exception as e:
        raise translate(e, endpoint=endpoint, region=sagemaker.meta.region_name) from e
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    image = container.get("Image", "")
    env = " ".join(f"{k}={v}" for k, v in (container.get("Environment") or {}).items())
    haystack = f"{image} {model_name} {env}"
    for pattern, handler in RULES:
        if re.search(pattern, haystack, re.IGNORECASE):
            return Detection(handler, image, model_name, f"matched {pattern!r}")
    return Detection(DEFAULT, image, model_name, "no rule matched; using the default")
