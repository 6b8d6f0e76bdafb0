"""LangChain models over sm_magic's invoke path: ``SagemakerEndpoint`` and ``ChatSagemakerEndpoint``.

``SagemakerEndpoint`` takes the constructor arguments of LangChain's class of the same name, so
the seed's code runs with only its imports changed. Errors keep their types (sm_magic's errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.llms import LLM
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, GenerationChunk
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, PrivateAttr

from sm_magic.calls import invoke, stream
from sm_magic.handlers.base import ContentHandler, LLMContentHandler, adapt
from sm_magic.handlers.presets import PRESETS
from sm_magic.options import InvokeOptions
from sm_magic.result import Result
from sm_magic.session import Session, SessionSettings

__all__ = ["ChatSagemakerEndpoint", "LLMContentHandler", "SagemakerEndpoint"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


class _EndpointFields(BaseModel):
    """Where and how to call: shared by the two models."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    endpoint_name: str = ""
    region_name: str | None = None
    credentials_profile_name: str | None = None
    client: Any = None
    content_handler: Any = None
    model_kwargs: dict[str, Any] | None = None
    endpoint_kwargs: dict[str, Any] | None = None
    streaming: bool = False
    inference_component_name: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None
    config: Any = None  # a botocore Config merged over sm_magic's (timeouts, retries, pool)
    session: Any = None  # an sm_magic Session, instead of the fields above

    _session: Session | None = PrivateAttr(default=None)
    _handler: ContentHandler | None = PrivateAttr(default=None)

    default_handler: str = "tgi"

    def sm_session(self) -> Session:
        """One session (and so one client) per model object."""
        if self._session is None:
            if self.session is not None:
                self._session = self.session
            else:
                settings = SessionSettings(profile=self.credentials_profile_name, region=self.region_name,
                                           endpoint_url=self.endpoint_url, role_arn=self.role_arn,
                                           botocore_config=self.config)
                self._session = Session(settings, client=self.client)
        return self._session

    def handler(self) -> ContentHandler:
        if self._handler is None:
            given = self.content_handler
            self._handler = PRESETS[self.default_handler]() if given is None else (
                PRESETS[given]() if isinstance(given, str) else adapt(given))
        return self._handler

    def options(self) -> InvokeOptions:
        options = InvokeOptions.from_boto(self.endpoint_kwargs or {})
        if self.inference_component_name:
            options.inference_component = self.inference_component_name
        return options

    def params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        params = {**(self.model_kwargs or {}), **kwargs}
        if stop:
            params["stop"] = stop
        return params

    def batch(self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False,
              **kwargs: Any) -> list[Any]:
        """Concurrent, at most ``config["max_concurrency"]`` calls in flight.

        (LangChain's ``BaseLLM.batch`` sends a batch's prompts one after another; the Runnable
        default runs ``invoke`` on a bounded thread pool, which is what an endpoint wants.)
        """
        return Runnable.batch(self, inputs, config, return_exceptions=return_exceptions, **kwargs)  # type: ignore[arg-type]


class SagemakerEndpoint(_EndpointFields, LLM):
    """A SageMaker real-time endpoint as a LangChain LLM (``invoke``, ``stream``, ``batch``, ``ainvoke``)."""

    @property
    def _llm_type(self) -> str:
        return "sm_magic_sagemaker_endpoint"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"endpoint_name": self.endpoint_name, "model_kwargs": self.model_kwargs or {}}

    def invoke_result(self, prompt: str, stop: list[str] | None = None, **kwargs: Any) -> Result:
        """Like ``invoke`` but returns sm_magic's Result (latency, usage, variant)."""
        return invoke(self.sm_session(), self.endpoint_name, prompt, self.handler(), self.params(stop, kwargs),
                      self.options())

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        if self.streaming:
            return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))
        return self.invoke_result(prompt, stop, **kwargs).text

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        s = stream(self.sm_session(), self.endpoint_name, prompt, self.handler(), self.params(stop, kwargs),
                   self.options())
        try:
            for text in s:
                chunk = GenerationChunk(text=text)
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        finally:
            s.close()


def to_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [{"role": _ROLES.get(m.type, m.type), "content": m.content} for m in messages]


class ChatSagemakerEndpoint(_EndpointFields, BaseChatModel):
    """A messages-API endpoint (TGI messages, LMI chat) as a LangChain chat model."""

    default_handler: str = "tgi-messages"

    @property
    def _llm_type(self) -> str:
        return "sm_magic_chat_sagemaker_endpoint"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        if self.streaming:
            text = "".join(c.text for c in self._stream(messages, stop, run_manager, **kwargs))
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
        result = invoke(self.sm_session(), self.endpoint_name, to_messages(messages), self.handler(),
                        self.params(stop, kwargs), self.options())
        message = AIMessage(content=result.text, response_metadata={"usage": result.usage or {},
                                                                    "latency_s": result.latency})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        s = stream(self.sm_session(), self.endpoint_name, to_messages(messages), self.handler(),
                   self.params(stop, kwargs), self.options())
        try:
            for text in s:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        finally:
            s.close()
