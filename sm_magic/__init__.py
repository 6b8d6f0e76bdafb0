"""sm_magic: Jupyter magics, a widget panel and LangChain classes for LLMs on SageMaker endpoints.

``%load_ext sm_magic`` registers ``%%sagemaker``; nothing heavy (boto3, langchain-core) is
imported until it is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Session": "sm_magic.session",
    "SessionSettings": "sm_magic.session",
    "invoke": "sm_magic.calls",
    "stream": "sm_magic.calls",
    "InvokeOptions": "sm_magic.options",
    "Result": "sm_magic.result",
    "ContentHandler": "sm_magic.handlers.base",
    "JSONTemplate": "sm_magic.handlers.presets",
    "Registry": "sm_magic.handlers.registry",
    "SagemakerEndpoint": "sm_magic.llm",
    "ChatSagemakerEndpoint": "sm_magic.llm",
    "LLMContentHandler": "sm_magic.handlers.base",
    "load_qa_chain": "sm_magic.chains",
    "Document": "sm_magic.chains",
    "run_batch": "sm_magic.batch",
    "BatchResult": "sm_magic.batch",
    "SageMaker": "sm_magic.resolve",
    "Runner": "sm_magic.runner",
    "LocalEndpoint": "sm_magic.local.server",
    "submit": "sm_magic.async_run",
    "AsyncCall": "sm_magic.async_run",
}

__all__ = [*_LAZY, "load_ipython_extension", "unload_ipython_extension"]

if TYPE_CHECKING:
    from sm_magic.async_run import AsyncCall, submit
    from sm_magic.batch import BatchResult, run_batch
    from sm_magic.calls import invoke, stream
    from sm_magic.chains import Document, load_qa_chain
    from sm_magic.handlers.base import ContentHandler, LLMContentHandler
    from sm_magic.handlers.presets import JSONTemplate
    from sm_magic.handlers.registry import Registry
    from sm_magic.llm import ChatSagemakerEndpoint, SagemakerEndpoint
    from sm_magic.local.server import LocalEndpoint
    from sm_magic.options import InvokeOptions
    from sm_magic.resolve import SageMaker
    from sm_magic.result import Result
    from sm_magic.runner import Runner
    from sm_magic.session import Session, SessionSettings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sm_magic' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext sm_magic``: register the magics (no network, no heavy imports)."""
    from sm_magic.magics import SageMakerMagics, question_marks_stay_in_the_line

    ipython.register_magics(SageMakerMagics)
    if question_marks_stay_in_the_line not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(question_marks_stay_in_the_line)


def unload_ipython_extension(ipython: Any) -> None:
    """Nothing to undo: the magics stay registered until the kernel restarts."""
