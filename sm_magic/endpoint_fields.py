"""The constructor arguments sm_magic's LangChain classes share (LangChain's own names), resolved once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from sm_magic.handlers.base import ContentHandler
from sm_magic.options import InvokeOptions
from sm_magic.session import Session, SessionSettings


@dataclass(frozen=True)
class Target:
    """What every call of a model object goes through, resolved once: session (so one client), handler, headers."""

    session: Session
    handler: ContentHandler
    options: Any  # InvokeOptions


class EndpointFields(BaseModel):
    """Where and how to call an endpoint: LangChain's constructor arguments, shared by sm_magic's LLM, chat and
    embeddings classes. Read on the first call (then fixed)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    endpoint_name: str = ""
    """The SageMaker endpoint's name."""
    region_name: str | None = None
    """AWS region (default: the profile's or the environment's)."""
    credentials_profile_name: str | None = None
    """A profile from ~/.aws/config or ~/.aws/credentials."""
    client: Any = None
    """A boto3 sagemaker-runtime client to use instead of making one."""
    content_handler: Any = None
    """A preset name ("tgi", "lmi"...), an sm_magic ContentHandler or a LangChain LLMContentHandler."""
    model_kwargs: dict[str, Any] | None = None
    """Model parameters sent with every call (temperature, max_new_tokens...)."""
    endpoint_kwargs: dict[str, Any] | None = None
    """invoke_endpoint parameters (CustomAttributes, TargetVariant, InferenceComponentName...)."""
    inference_component_name: str | None = None
    """The inference component to call on a multi-component endpoint."""
    endpoint_url: str | None = None
    """Runtime URL (a VPC endpoint, or a local endpoint from sm-magic serve)."""
    role_arn: str | None = None
    """A role to assume; its credentials refresh before they expire."""
    config: Any = None
    """A botocore Config merged over sm_magic's (timeouts, retries, pool)."""
    session: Any = None
    """An sm_magic Session, instead of the fields above."""

    _target: Target | None = PrivateAttr(default=None)

    def target(self) -> Target:
        """Session, handler and headers, made on the first call and reused (one client per object)."""
        target = self.__pydantic_private__.get("_target")  # not self._target: pydantic's __getattr__ per call
        if target is None:
            session = self.session or Session(
                SessionSettings(profile=self.credentials_profile_name, region=self.region_name,
                                endpoint_url=self.endpoint_url, role_arn=self.role_arn, botocore_config=self.config),
                client=self.client)
            handler = self.make_handler(self.content_handler)
            options = InvokeOptions.from_boto(self.endpoint_kwargs or {})
            if self.inference_component_name:
                options.inference_component = self.inference_component_name
            target = self._target = Target(session, handler, options)
        return target

    def make_handler(self, given: Any) -> Any:
        """The content handler from ``content_handler`` (a name, ours, or LangChain's duck type)."""
        raise NotImplementedError
