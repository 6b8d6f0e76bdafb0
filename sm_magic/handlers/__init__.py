"""Content handlers: how a prompt becomes a request body and an answer becomes text."""

from sm_magic.handlers.base import Body, ContentHandler, LangChainHandler, Output, adapt
from sm_magic.handlers.presets import PRESETS, JSONTemplate
from sm_magic.handlers.registry import Registry

__all__ = ["PRESETS", "Body", "ContentHandler", "JSONTemplate", "LangChainHandler", "Output", "Registry", "adapt"]
