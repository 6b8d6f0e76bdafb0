"""SageMaker's per-call invoke headers, as one record (boto3 parameter names and HTTP headers)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sm_magic.errors import ConfigError

# option → (boto3 parameter, HTTP header, allowed when streaming)
_HEADERS: dict[str, tuple[str, str, bool]] = {
    "custom_attributes": ("CustomAttributes", "X-Amzn-SageMaker-Custom-Attributes", True),
    "inference_component": ("InferenceComponentName", "X-Amzn-SageMaker-Inference-Component", True),
    "target_variant": ("TargetVariant", "X-Amzn-SageMaker-Target-Variant", True),
    "target_model": ("TargetModel", "X-Amzn-SageMaker-Target-Model", False),
    "target_container_hostname": ("TargetContainerHostname", "X-Amzn-SageMaker-Target-Container-Hostname", True),
    "inference_id": ("InferenceId", "X-Amzn-SageMaker-Inference-Id", True),
    "session_id": ("SessionId", "X-Amzn-SageMaker-Session-Id", True),
    "enable_explanations": ("EnableExplanations", "X-Amzn-SageMaker-Enable-Explanations", False),
}


@dataclass
class InvokeOptions:
    """SageMaker's per-call routing and metadata headers."""

    custom_attributes: str | None = None
    inference_component: str | None = None
    target_variant: str | None = None
    target_model: str | None = None
    target_container_hostname: str | None = None
    inference_id: str | None = None
    session_id: str | None = None
    enable_explanations: str | None = None

    @classmethod
    def from_boto(cls, kwargs: dict[str, Any]) -> InvokeOptions:
        """From boto3 parameter names (LangChain's ``endpoint_kwargs``)."""
        by_param = {param: option for option, (param, _, _) in _HEADERS.items()}
        unknown = set(kwargs) - set(by_param)
        if unknown:
            raise ConfigError(f"Unknown invoke parameter(s): {', '.join(sorted(unknown))}. "
                              f"Known: {', '.join(sorted(by_param))}.")
        return cls(**{by_param[k]: v for k, v in kwargs.items()})

    def merged(self, other: InvokeOptions) -> InvokeOptions:
        """These options, with ``other``'s set values taking precedence."""
        return InvokeOptions(**{f.name: getattr(other, f.name) or getattr(self, f.name) for f in fields(self)})

    def headers(self, stream: bool) -> dict[str, str]:
        return {header: str(getattr(self, option)) for option, (_, header, ok) in _HEADERS.items()
                if getattr(self, option) and (ok or not stream)}

    def boto_kwargs(self, stream: bool) -> dict[str, str]:
        out = {}
        for option, (param, _, ok) in _HEADERS.items():
            value = getattr(self, option)
            if not value:
                continue
            if stream and not ok:
                raise ConfigError(f"--{option.replace('_', '-')} cannot be used when streaming "
                                  "(InvokeEndpointWithResponseStream has no such parameter).")
            out[param] = str(value)
        return out
