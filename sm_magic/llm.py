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
from pydantic import PrivateAttr

from sm_magic.calls import invoke, stream
from sm_magic.endpoint_fields import EndpointFields, Target
from sm_magic.errors import SageMakerError, ValidationFailed
from sm_magic.handlers.base import ContentHandler, LLMContentHandler, adapt
from sm_magic.handlers.presets import PRESETS
from sm_magic.result import Result

__all__ = ["ChatSagemakerEndpoint", "LLMContentHandler", "SagemakerEndpoint"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


class _EndpointFields(EndpointFields):
    """The LLM classes' part: streaming and the default preset."""

    streaming: bool = False
    """Stream tokens (invoke returns the joined text; stream yields them)."""

    default_handler: str = "tgi"

    def make_handler(self, given: Any) -> ContentHandler:
        if given is None:
            return PRESETS[self.default_handler]()
        return PRESETS[given]() if isinstance(given, str) else adapt(given)

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
    """A SageMaker endpoint as a LangChain LLM (``invoke``, ``stream``, ``batch``, ``ainvoke``).

    An asynchronous inference endpoint is called through S3 and InvokeEndpointAsync (found out on the
    first call, or set ``async_inference=True``); ``invoke`` waits for its answer.

    Example::

        from sm_magic import SagemakerEndpoint

        llm = SagemakerEndpoint(endpoint_name="my-llm", region_name="us-west-2", content_handler="tgi",
                                model_kwargs={"temperature": 0.2, "max_new_tokens": 200})
        llm.invoke("How long was Elizabeth hospitalized?")
    """

    async_inference: bool | None = None
    """True: through S3 and InvokeEndpointAsync; False: real-time; None: real-time unless the endpoint is async."""
    s3_input: str | None = None
    """Async: where request bodies are uploaded (default: the bucket of the endpoint's S3OutputPath)."""

    _async_run: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "sm_magic_sagemaker_endpoint"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"endpoint_name": self.endpoint_name, "model_kwargs": self.model_kwargs or {}}

    def invoke_result(self, prompt: str, stop: list[str] | None = None, **kwargs: Any) -> Result:
        """Like ``invoke`` but returns sm_magic's Result (latency, usage, variant)."""
        t = self.target()
        if self.async_inference:
            return self._async_result(t, prompt, stop, kwargs)
        try:
            return invoke(t.session, self.endpoint_name, prompt, t.handler, self.params(stop, kwargs), t.options)
        except ValidationFailed:  # a real-time call to an async endpoint is refused: is it one?
            if self.async_inference is None and self._endpoint_is_async(t):
                return self._async_result(t, prompt, stop, kwargs)
            raise

    def _endpoint_is_async(self, t: Target) -> bool:
        from sm_magic.async_ import async_inference_config

        try:
            self.async_inference = async_inference_config(t.session, self.endpoint_name) is not None
        except SageMakerError:
            self.async_inference = False
        return self.async_inference

    def _async_result(self, t: Target, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> Result:
        from sm_magic.async_ import AsyncSettings
        from sm_magic.async_run import AsyncRun

        if self._async_run is None:  # one collector for every call of this model object
            self._async_run = AsyncRun(t.session, AsyncSettings(s3_input=self.s3_input))
        return self._async_run.submit(object(), self.endpoint_name, prompt, t.handler, self.params(stop, kwargs),
                                      t.options).result()

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        if self.streaming:
            return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))
        return self.invoke_result(prompt, stop, **kwargs).text

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        if self.async_inference:  # an async answer arrives whole
            yield GenerationChunk(text=self.invoke_result(prompt, stop, **kwargs).text)
            return
        t = self.target()
        s = stream(t.session, self.endpoint_name, prompt, t.handler, self.params(stop, kwargs), t.options)
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
        t = self.target()
        result = invoke(t.session, self.endpoint_name, to_messages(messages), t.handler, self.params(stop, kwargs),
                        t.options)
        message = AIMessage(content=result.text, response_metadata={"usage": result.usage or {},
                                                                    "latency_s": result.latency})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        t = self.target()
        s = stream(t.session, self.endpoint_name, to_messages(messages), t.handler, self.params(stop, kwargs),
                   t.options)
        try:
            for text in s:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        finally:
            s.close()
