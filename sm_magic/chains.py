"""``load_qa_chain``: the seed's document-QA call, over sm_magic's QA (stuff, map-reduce, refine)."""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable

from sm_magic.errors import ConfigError
from sm_magic.qa import answer
from sm_magic.result import Result

__all__ = ["Document", "QAChain", "load_qa_chain"]

CHAIN_TYPES = {"stuff": "stuff", "map_reduce": "map-reduce", "refine": "refine", "auto": "auto"}


class QAChain(RunnableSerializable[dict, dict]):
    """``chain({"input_documents": docs, "question": q})`` → ``{"output_text": ...}``; also ``.invoke``."""

    llm: Any
    prompt: Any = None
    chain_type: str = "stuff"
    context_tokens: int = 2048
    max_new_tokens: int = 256
    max_concurrency: int = 8
    allow_partial: bool = False  # True: an answer from fewer chunks than planned (it says so) instead of an error

    def _ask(self, prompt: str) -> Result:
        if hasattr(self.llm, "invoke_result"):
            return self.llm.invoke_result(prompt)
        text = self.llm.invoke(prompt)
        return Result(getattr(text, "content", text), getattr(self.llm, "endpoint_name", "llm"), "langchain")

    def _ask_many(self, prompts: list[str]) -> list[Any]:
        from sm_magic.batch import ItemError, run_batch

        outcomes = run_batch(self._ask, prompts, self.max_concurrency, progress=False, label="map").outcomes
        return [o.error if isinstance(o, ItemError) else o for o in outcomes]

    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        try:
            result = answer(str(input["question"]), input["input_documents"], self._ask, self._ask_many,
                            template=self.prompt, mode=CHAIN_TYPES[self.chain_type],
                            context_tokens=self.context_tokens, max_new_tokens=self.max_new_tokens,
                            allow_partial=self.allow_partial)
        except KeyError as e:
            raise ConfigError(f"The chain needs 'input_documents' and 'question' (missing {e}).") from None
        failures = result.data.get("map_failures", []) if isinstance(result.data, dict) else []
        return {"output_text": result.text, "sources": result.sources, "map_failures": failures,
                "partial": result.partial}

    def __call__(self, inputs: dict, return_only_outputs: bool = False) -> dict:
        out = self.invoke(inputs)
        out = {"output_text": out["output_text"]}
        return out if return_only_outputs else {**inputs, **out}


def load_qa_chain(llm: Any, chain_type: str = "stuff", prompt: Any = None, **kwargs: Any) -> QAChain:
    """LangChain's ``load_qa_chain`` signature: ``stuff``, ``map_reduce`` or ``refine``."""
    if chain_type not in CHAIN_TYPES:
        raise ConfigError(f"Unknown chain_type {chain_type!r}; choose one of {', '.join(CHAIN_TYPES)}.")
    return QAChain(llm=llm, prompt=prompt, chain_type=chain_type, **kwargs)
