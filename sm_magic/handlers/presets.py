"""Handlers for the container formats of SageMaker LLM endpoints (see docs/protocol in README).

Model parameters use one vocabulary (``max_new_tokens``, ``temperature``, ``top_p``, ``stop``,
``seed``, plus anything else passed through) and each preset renames them for its container.
"""

from __future__ import annotations

import json
from typing import Any

from sm_magic.errors import ConfigError, HandlerError
from sm_magic.handlers.base import JSONHandler, Output, Prompt, as_messages, as_text
from sm_magic.handlers.embeddings import JumpStartEmbeddings, TEIEmbeddings


def _tgi_parameters(params: dict[str, Any], stop_key: str = "stop") -> dict[str, Any]:
    out = {k: v for k, v in params.items() if v is not None}
    if "stop" in out:
        stop = out.pop("stop")
        out[stop_key] = [stop] if isinstance(stop, str) else list(stop)
    temperature = out.get("temperature")
    if temperature is not None and temperature <= 0:
        out.pop("temperature")  # TGI rejects 0: greedy decoding instead
        out.setdefault("do_sample", False)
    return out


def _openai_usage(data: dict) -> dict[str, int] | None:
    usage = data.get("usage")
    return {k: v for k, v in usage.items() if isinstance(v, int)} if isinstance(usage, dict) else None


def _last(out: Output) -> Output:
    """Mark the container's last event, its end marker: a stream that ends without one is truncated."""
    out.final = True  # type: ignore[attr-defined]  # read by the stream decoder with getattr
    return out


def _tgi_usage(details: Any, prompt_tokens: int | None = None) -> dict[str, int] | None:
    if not isinstance(details, dict) or "generated_tokens" not in details:
        return None
    return {"completion_tokens": details["generated_tokens"]}


class TGI(JSONHandler):
    """Hugging Face TGI: sends the prompt as "inputs" with "parameters", reads "generated_text"; streams tokens."""

    name = "tgi"
    end_marker = "a last event carrying generated_text"

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        body: dict[str, Any] = {"inputs": as_text(prompt), "parameters": _tgi_parameters(params)}
        if stream:
            body["stream"] = True
        return json.dumps(body).encode()

    def decode(self, body: bytes) -> Output:
        data = self.load(body)
        item = data[0] if isinstance(data, list) and data else data
        if not isinstance(item, dict) or not isinstance(item.get("generated_text"), str):
            raise self.shape_error('[{"generated_text": ...}]', body)
        details = item.get("details") or {}
        return Output(item["generated_text"], _tgi_usage(details), details.get("finish_reason"))

    def decode_event(self, payload: str) -> Output | None:
        data = self.load(payload)
        if isinstance(data, list):  # the container answered without streaming
            return _last(self.decode(payload.encode()))
        if not isinstance(data, dict):
            raise self.shape_error('a {"token": ...} event', payload)
        if "error" in data:
            return Output(finish_reason="error", data=data["error"])
        token = data.get("token")
        if not isinstance(token, dict):
            if isinstance(data.get("generated_text"), str):
                return _last(self.decode(payload.encode()))
            raise self.shape_error('a {"token": ...} event', payload)
        details = data.get("details") or {}
        text = "" if token.get("special") else token.get("text", "")
        out = Output(text, _tgi_usage(details), details.get("finish_reason"))
        # TGI's last event carries the whole generated_text (and details); the others carry null
        return _last(out) if isinstance(data.get("generated_text"), str) or out.finish_reason else out


class ChatCompletions(JSONHandler):
    """OpenAI-style chat (TGI Messages API): sends "messages", reads choices[0].message.content; streams chunks."""

    name = "tgi-messages"
    chat = True
    end_marker = "a chunk with a finish_reason, or data: [DONE]"

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        body: dict[str, Any] = {"messages": as_messages(prompt)}
        for key, value in params.items():
            if value is None:
                continue
            if key == "max_new_tokens":
                body["max_tokens"] = value
            elif key == "stop":
                body["stop"] = [value] if isinstance(value, str) else list(value)
            else:
                body[key] = value
        if stream:
            body["stream"] = True
        return json.dumps(body).encode()

    def decode(self, body: bytes) -> Output:
        data = self.load(body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise self.shape_error('{"choices": [{"message": {"content": ...}}]}', body) from None
        return Output(text, _openai_usage(data), choice.get("finish_reason"))

    def decode_event(self, payload: str) -> Output | None:
        data = self.load(payload)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            if isinstance(data, dict) and "error" in data:
                return Output(finish_reason="error", data=data["error"])
            raise self.shape_error('a "chat.completion.chunk" event', payload)
        usage = _openai_usage(data)
        if not data["choices"]:  # a usage-only chunk
            return Output("", usage)
        choice = data["choices"][0]
        if "message" in choice:  # the container answered without streaming
            return _last(self.decode(payload.encode()))
        delta = choice.get("delta") or {}
        out = Output(delta.get("content") or "", usage, choice.get("finish_reason"))
        return _last(out) if out.finish_reason else out


class LMIChat(ChatCompletions):
    """DJL LMI chat: OpenAI-style "messages" in, choices[0].message.content out; streams chunks."""

    name = "lmi-chat"


class LMI(JSONHandler):
    """DJL LMI (rolling batch): sends "inputs" with "parameters", reads "generated_text"; streams JSON lines."""

    name = "lmi"
    end_marker = "a last line carrying generated_text"

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        body: dict[str, Any] = {"inputs": as_text(prompt),
                                "parameters": _tgi_parameters(params, stop_key="stop_sequences")}
        if stream:
            body["stream"] = True
        return json.dumps(body).encode()

    def decode(self, body: bytes) -> Output:
        data = self.load(body)
        if isinstance(data, list) and data:  # older dynamic-batch images answer a list
            data = data[0]
        if not isinstance(data, dict) or not isinstance(data.get("generated_text"), str):
            raise self.shape_error('{"generated_text": ...}', body)
        details = data.get("details") or {}
        return Output(data["generated_text"], _tgi_usage(details), details.get("finish_reason"))

    def decode_event(self, payload: str) -> Output | None:
        data = self.load(payload)
        if isinstance(data, dict) and isinstance(data.get("outputs"), list):  # dynamic batch lines
            # the older format has no end marker: any line may be the last, so none is missing
            return _last(Output("".join(map(str, data["outputs"]))))
        if not isinstance(data, dict):
            raise self.shape_error('a {"token": ...} line', payload)
        details = data.get("details") or {}
        if details.get("finish_reason") == "error":
            return Output(finish_reason="error", data=details)
        token = data.get("token")
        if not isinstance(token, dict):
            if isinstance(data.get("generated_text"), str):
                return _last(self.decode(payload.encode()))
            raise self.shape_error('a {"token": ...} line', payload)
        out = Output(token.get("text") or "", _tgi_usage(details), details.get("finish_reason"))
        # LMI's last line carries generated_text (and details.finish_reason when details are on)
        return _last(out) if isinstance(data.get("generated_text"), str) or out.finish_reason else out


class Llama2Chat(JSONHandler):
    """JumpStart Llama 2 chat: sends the conversation as "inputs", reads generation.content; sends accept_eula=true."""

    name = "llama2-chat"
    chat = True
    streams = False
    custom_attributes = "accept_eula=true"

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        parameters = {k: v for k, v in params.items() if v is not None and k != "stop"}
        return json.dumps({"inputs": [as_messages(prompt)], "parameters": parameters}).encode()

    def decode(self, body: bytes) -> Output:
        data = self.load(body)
        try:
            return Output(data[0]["generation"]["content"])
        except (KeyError, IndexError, TypeError):
            raise self.shape_error('[{"generation": {"content": ...}}]', body) from None


class FlanT5(JSONHandler):
    """JumpStart Flan-T5: sends "text_inputs" with the parameters, reads the first of "generated_texts"."""

    name = "flan-t5"
    streams = False

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        body = {"text_inputs": as_text(prompt)}
        for key, value in params.items():
            if value is not None:
                body["max_length" if key == "max_new_tokens" else key] = value
        return json.dumps(body).encode()

    def decode(self, body: bytes) -> Output:
        data = self.load(body)
        texts = data.get("generated_texts") if isinstance(data, dict) else None
        if not isinstance(texts, list) or not texts:
            raise self.shape_error('{"generated_texts": [...]}', body)
        return Output(str(texts[0]))


class Embedding(JSONHandler):
    """JumpStart text embedding: sends the raw text, reads the "embedding" vector (the answer names its size)."""

    name = "embedding"
    content_type = "application/x-text"
    streams = False

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        return as_text(prompt).encode()

    def decode(self, body: bytes) -> Output:
        data = self.load(body)
        vector = data.get("embedding") if isinstance(data, dict) else data
        if isinstance(vector, list) and vector and isinstance(vector[0], list):
            vector = vector[0]
        if not isinstance(vector, list) or not all(isinstance(v, int | float) for v in vector):
            raise self.shape_error('{"embedding": [numbers]}', body)
        return Output(f"[embedding: {len(vector)} dimensions]", data=vector)


class PlainText(JSONHandler):
    """Plain text both ways: the prompt is the request body and the response body is the answer."""

    name = "text"
    content_type = "text/plain"
    accepts = "text/plain"
    streams = False

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        return as_text(prompt).encode()

    def decode(self, body: bytes) -> Output:
        try:
            return Output(bytes(body).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise HandlerError(f"the answer is not UTF-8 text ({e}).", handler=self.name, body=body) from None


class JSONTemplate(JSONHandler):
    """Any JSON container: a request template and where the answer is in the response.

    In the template, the strings ``"{prompt}"``, ``"{messages}"``, ``"{params}"`` and ``"{stream}"``
    are replaced by values; ``{prompt}`` inside a longer string is replaced by the text.
    ``response_path`` and ``stream_path`` are JMESPath expressions (``[0].generated_text``,
    ``choices[0].message.content``, ``token.text``), compiled once.
    """

    def __init__(self, request_template: dict | list | str, response_path: str,
                 stream_path: str | None = None, name: str = "json"):
        self.template = json.loads(request_template) if isinstance(request_template, str) else request_template
        import jmespath
        from jmespath.exceptions import JMESPathError

        self.response_path = response_path
        self.stream_path = stream_path
        try:
            self._response = jmespath.compile(response_path)
            self._stream = jmespath.compile(stream_path or response_path)
        except JMESPathError as e:
            raise ConfigError(f"Not a JMESPath expression ({e}); write paths like '[0].generated_text' or "
                              "'choices[0].message.content'.") from None
        self.streams = stream_path is not None
        self.name = name

    def encode(self, prompt: Prompt, params: dict[str, Any], stream: bool = False) -> bytes:
        values = {"{prompt}": as_text(prompt), "{messages}": as_messages(prompt),
                  "{params}": {k: v for k, v in params.items() if v is not None}, "{stream}": stream}

        def substitute(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: substitute(v) for k, v in node.items()}
            if isinstance(node, list):
                return [substitute(v) for v in node]
            if isinstance(node, str):
                if node in values:
                    return values[node]
                return node.replace("{prompt}", as_text(prompt))
            return node

        return json.dumps(substitute(self.template)).encode()

    def _at(self, data: Any, path: Any, body: bytes | str) -> str:
        found = path.search(data)
        if found is None:
            raise self.shape_error(f"a value at {path.expression!r}", body)
        return found if isinstance(found, str) else json.dumps(found)

    def decode(self, body: bytes) -> Output:
        return Output(self._at(self.load(body), self._response, body))

    def decode_event(self, payload: str) -> Output | None:
        return Output(self._at(self.load(payload), self._stream, payload))


PRESETS: dict[str, type] = {
    "tgi": TGI,
    "tgi-messages": ChatCompletions,
    "lmi": LMI,
    "lmi-chat": LMIChat,
    "llama2-chat": Llama2Chat,
    "flan-t5": FlanT5,
    "embedding": Embedding,
    "tei-embedding": TEIEmbeddings,
    "jumpstart-embedding": JumpStartEmbeddings,
    "text": PlainText,
}
