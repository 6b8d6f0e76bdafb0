"""Embedding containers: Hugging Face TEI and JumpStart text embedding, as their endpoints answer.

``parse`` reads the texts into an :class:`EmbeddingRequest`; the endpoint's backend fills in
``vectors`` (see ``backends.embed_request``); ``response`` renders them in the container's shape.
Errors carry the container's own status and body, which SageMaker passes on in a 424 ModelError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sm_magic.local.containers import ECR, Container, ContainerError, Generation, Usage, _json, embed


@dataclass
class EmbeddingRequest(Generation):
    """Texts to embed; ``vectors`` is set by the backend before the response is rendered."""

    texts: list[str] = field(default_factory=list)
    normalize: bool = True
    single: bool = False  # one text in, one vector out (JumpStart's raw-text shape)
    vectors: list[list[float]] | None = None


def _request(texts: list[str], normalize: bool = True, single: bool = False) -> EmbeddingRequest:
    return EmbeddingRequest(prompt="\n".join(texts), max_new_tokens=1, texts=texts, normalize=normalize,
                            single=single)


class EmbeddingContainer(Container):
    """Base of the embedding containers: no tokens are generated, vectors are answered."""

    embeds = True

    def vectors(self, gen: Generation) -> list[list[float]]:
        if isinstance(gen, EmbeddingRequest) and gen.vectors is not None:
            return gen.vectors
        texts = gen.texts if isinstance(gen, EmbeddingRequest) else [gen.prompt or ""]
        return [embed(t) for t in texts]  # a server that did not run the backend: the hashing vectors


class TEIEmbedding(EmbeddingContainer):
    """Hugging Face Text Embeddings Inference (``/embed`` behind ``/invocations``).

    ``{"inputs": str | [str], "normalize": bool, "truncate": bool}`` → ``[[floats], ...]``. More
    than ``max_client_batch_size`` (TEI's default: 32) texts → 413 with TEI's error body.
    """

    name = "tei-embedding"
    image = f"{ECR}/huggingface-tei-cpu:2.0.1-tei1.2.3-cpu-py310-ubuntu22.04"
    model_name = "hf-tei-all-minilm-l6-v2"
    max_client_batch_size = 32

    @staticmethod
    def _error(status: int, message: str, kind: str) -> ContainerError:
        return ContainerError(status, json.dumps({"error": message, "error_type": kind}))

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        data = _json(body)
        if not isinstance(data, dict) or "inputs" not in data:
            raise ContainerError(422, "Failed to deserialize the JSON body into the target type: missing field "
                                      "`inputs`")
        inputs = data["inputs"]
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ContainerError(422, "Failed to deserialize the JSON body into the target type: inputs: "
                                      "data did not match any variant of untagged enum Input")
        if not texts:
            raise self._error(400, "`inputs` cannot be empty", "empty")
        if len(texts) > self.max_client_batch_size:
            raise self._error(413, f"batch size {len(texts)} > maximum allowed batch size "
                                   f"{self.max_client_batch_size}", "validation")
        return _request(texts, normalize=data.get("normalize", True) is not False)

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        return json.dumps(self.vectors(gen)).encode()


class JumpStartEmbedding(EmbeddingContainer):
    """JumpStart text embedding (``huggingface-textembedding-*``).

    ``application/json`` ``{"text_inputs": [str, ...]}`` → ``{"embedding": [[floats], ...]}``;
    ``application/x-text`` with one text as the body → ``{"embedding": [floats]}``.
    """

    name = "jumpstart-embedding"
    image = f"{ECR}/huggingface-pytorch-inference:1.13.1-transformers4.26.0-cpu-py39-ubuntu20.04"
    model_name = "huggingface-textembedding-all-minilm-l6-v2"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("application/x-text", "text/plain"):
            try:
                return _request([body.decode("utf-8")], single=True)
            except UnicodeDecodeError as e:
                raise ContainerError(400, f"Unable to decode input as UTF-8: {e}") from None
        if content_type != "application/json":
            raise ContainerError(415, f"Content type {content_type or '(none)'} is not supported: "
                                      "use application/json or application/x-text")
        data = _json(body)
        texts = data.get("text_inputs") if isinstance(data, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ContainerError(400, "Unable to parse input: expected 'text_inputs' as a non-empty list "
                                      "of strings")
        return _request(texts, normalize=data.get("normalize", True) is not False)

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        vectors = self.vectors(gen)
        single = isinstance(gen, EmbeddingRequest) and gen.single
        return json.dumps({"embedding": vectors[0] if single else vectors}).encode()


class CustomEmbedding(EmbeddingContainer):
    """The Hugging Face inference toolkit with the custom ``inference.py`` of LangChain's SageMaker
    embeddings guide: ``{"inputs": [texts]}`` → ``{"vectors": [[floats], ...]}``."""

    name = "custom-embedding"
    image = f"{ECR}/huggingface-pytorch-inference:2.1.0-transformers4.37.0-cpu-py310-ubuntu22.04"
    model_name = "huggingface-pytorch-inference-all-minilm-l6-v2"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        data = _json(body)
        inputs = data.get("inputs") if isinstance(data, dict) else None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ContainerError(400, "Expected {'inputs': [str, ...]}")
        return _request(texts)

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        return json.dumps({"vectors": self.vectors(gen)}).encode()


EMBEDDING_CONTAINERS: dict[str, Container] = {
    "tei-embedding": TEIEmbedding(),
    "jumpstart-embedding": JumpStartEmbedding(),
    "custom-embedding": CustomEmbedding(),
}
