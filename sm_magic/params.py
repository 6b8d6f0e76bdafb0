"""THE table of parameters: every option a cell, an alias, ``%sagemaker config``, ``%config`` or the
panel can set is one :class:`Param` row here.

Everything else is generated from it: the ``%%sagemaker`` flags (grouped by section), the alias
flags and the alias file's keys and types, the ``%sagemaker config`` keys, the configurable traits
of :class:`~sm_magic.workspace.SageMaker`, the panel's fields, the README's option reference, and
the invoke headers. Values are checked here, once, for every entry point (:meth:`Param.parse`,
:meth:`Param.check`). Adding a parameter is one row (plus, for a model parameter, its mapping in the
content handlers).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sm_magic.errors import ConfigError

LOCAL_URL = "http://127.0.0.1:8080"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

# Sections, in the order ``%%sagemaker?`` shows them.
MODEL, INVOKE, SESSION, CALL, QA, BATCH, VIEW = "model", "invoke", "session", "call", "qa", "batch", "view"
ASYNC = "async"
SECTIONS = {CALL: "the call", MODEL: "model parameters", INVOKE: "invoke headers (SageMaker)",
            SESSION: "where (this cell only)", QA: "document QA (--docs)", BATCH: "batches (--batch)",
            ASYNC: "asynchronous inference (--async)", VIEW: "output"}


def _finite(value: Any, where: str) -> Any:
    """Refuse NaN and infinities anywhere in a JSON value: they are not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} holds NaN or Infinity, which JSON cannot carry; use a finite number.")
    if isinstance(value, dict):
        for item in value.values():
            _finite(item, where)
    elif isinstance(value, list):
        for item in value:
            _finite(item, where)
    return value


def json_object(text: str, where: str = "-m/--model-kwargs") -> dict[str, Any]:
    """A JSON object typed by a person: finite numbers, an object, one clear error otherwise."""
    try:
        value = json.loads(text, parse_constant=lambda c: float(c))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} is not valid JSON ({e.msg} at character {e.pos}): {text[:80]!r}. Give one "
                          "quoted JSON object, e.g. -m '{\"do_sample\": true}'.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object, e.g. '{{\"do_sample\": true}}', not {text[:80]!r}.")
    return _finite(value, where)


def unescape(text: str) -> str:
    """``\\n`` and ``\\t`` typed in a flag mean a newline and a tab (stop sequences)."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


@dataclass(frozen=True)
class Param:
    """One parameter: its name, type, help, default and where it can be set."""

    name: str
    section: str
    type: str  # str | int | float | bool | list | json
    help: str
    default: Any = None
    flag: bool = True  # a %%sagemaker flag
    alias: bool = False  # a key of an alias section (and an `alias add` flag)
    config: bool = False  # a %sagemaker config key, a %config trait and a panel field
    choices: tuple[str, ...] = ()
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    short: str = ""
    metavar: str | None = None
    header: str = ""  # invoke headers: HTTP header
    boto: str = ""  # invoke headers: boto3 parameter
    streams: bool = True  # invoke headers: allowed on InvokeEndpointWithResponseStream
    max_length: int | None = None  # invoke headers: SageMaker's limit, in characters
    variable: bool = False  # names a notebook variable: the view passes the object on, not the name

    @property
    def option(self) -> str:
        return "--" + self.name.rstrip("_").replace("_", "-")  # async_ → --async

    def parse(self, text: str) -> Any:
        """The value of ``text`` as typed in a flag, an alias file, a config line or a form field."""
        text = text.strip() if self.type != "list" else text
        if self.type == "str":
            value: Any = text
        elif self.type == "bool":
            if text.lower() not in TRUE + FALSE:
                raise ConfigError(f"{self.name} must be true or false, not {text!r}.")
            value = text.lower() in TRUE
        elif self.type == "json":
            value = json_object(text, self.name)
        elif self.type == "list":
            value = json.loads(text) if text.startswith("[") else [unescape(text)]
        else:
            try:
                value = int(text) if self.type == "int" else float(text)
            except ValueError:
                kind = "an integer" if self.type == "int" else "a number"
                raise ConfigError(f"{self.name} must be {kind}, not {text!r}.") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """Validate a value (from any entry point); returns it."""
        if value is None:
            return None
        if self.type in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{self.name} must be a number, not {value!r}.")
            if self.type == "int" and not float(value).is_integer():
                raise ConfigError(f"{self.name} must be an integer, not {value!r}.")
            _finite(float(value), self.name)
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ConfigError(f"{self.name} must be {self._range()}, not {value!r}.")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)}; not {value!r}.")
        if self.header:
            self._check_header(str(value))
        return value

    def _check_header(self, text: str) -> None:
        """SageMaker's length limit, and printable ASCII only (what an HTTP header carries safely)."""
        if self.max_length is not None and len(text) > self.max_length:
            raise ConfigError(f"{self.option} is {len(text):,} characters long; SageMaker takes at most "
                              f"{self.max_length:,}.")
        bad = next((i for i, c in enumerate(text) if not " " <= c <= "~"), None)
        if bad is not None:
            raise ConfigError(f"{self.option} travels as an HTTP header, which takes printable ASCII only; "
                              f"it holds {text[bad]!r} at character {bad + 1}.")

    def _range(self) -> str:
        if self.high is None:
            return f"at least {self.low:g}"
        return f"between {self.low:g} and {self.high:g}"

    def format(self, value: Any) -> str:
        """How a value is written back (alias file, form field)."""
        if value is None:
            return ""
        if self.type in ("list", "json"):
            return json.dumps(value)
        return str(value).lower() if self.type == "bool" else str(value)

    def trait(self) -> Any:
        """A traitlets trait for :class:`~sm_magic.workspace.SageMaker` (``%config``)."""
        import traitlets as t

        kinds = {"str": t.Unicode, "int": t.Int, "float": t.Float, "bool": t.Bool, "list": t.List, "json": t.Dict}
        kwargs: dict[str, Any] = {"help": self.help, "allow_none": self.default is None}
        if self.type in ("int", "float"):
            kwargs.update(min=self.low, max=self.high)
        if self.choices:
            trait = t.Enum(self.choices, default_value=self.default, **kwargs)
        elif self.type in ("list", "json"):
            trait = kinds[self.type](default_value=self.default, **kwargs)
        else:
            trait = kinds[self.type](self.default, **kwargs)
        return trait.tag(config=True)

    def add_to(self, parser: Any, **overrides: Any) -> None:
        """Add this parameter's flag to an argparse parser or group."""
        text = self.help.replace("%", "%%")  # argparse formats help with %: `%sagemaker` is text here
        kwargs: dict[str, Any] = {"help": text, "dest": self.name}
        if self.type == "bool":
            kwargs.update(action="store_true", default=None)
        else:
            kwargs["type"] = _argparse_type(self)
            kwargs["metavar"] = self.metavar or self.name.upper()
            if self.type == "list":
                kwargs["action"] = "append"
            if self.choices:
                kwargs.update(choices=self.choices, type=str, help=f"{text}: {', '.join(self.choices)}")
        kwargs.update(overrides)
        flags = [self.short, self.option] if self.short else [self.option]
        parser.add_argument(*flags, **kwargs)


def _argparse_type(param: Param) -> Callable[[str], Any]:
    import argparse

    def parse(text: str) -> Any:
        try:
            value = param.parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(e.message) from None
        return value[0] if param.type == "list" else value

    parse.__name__ = param.type  # argparse names the type in some messages
    return parse


def P(name: str, section: str, type: str, help: str, **kw: Any) -> Param:
    return Param(name, section, type, help, **kw)


H = "X-Amzn-SageMaker-"
PARAMS: tuple[Param, ...] = (
    # the call
    P("handler", CALL, "str", "content handler: a preset, a registered name, or auto (detect)", default="auto",
      alias=True, config=True),
    P("stream", CALL, "bool", "show tokens as they arrive", default=False, config=True),
    P("chat", CALL, "bool", "conversation mode: the endpoint's chat history is sent too"),
    P("no_interpolate", CALL, "bool", "send {braces} as written"),
    P("dry_run", CALL, "bool", "show the exact request without sending it"),
    # model parameters (the handlers map them to each container's names)
    P("temperature", MODEL, "float", "sampling temperature (0: greedy)", low=0, high=100, alias=True, config=True),
    P("max_new_tokens", MODEL, "int", "most tokens to generate", low=1, alias=True, config=True),
    P("top_p", MODEL, "float", "nucleus sampling probability", low=0, high=1, alias=True, config=True),
    P("stop", MODEL, "list", "stop sequence (repeatable; \\n means a newline)", alias=True, config=True),
    P("seed", MODEL, "int", "sampling seed", low=0, alias=True, config=True),
    P("model_kwargs", MODEL, "json", "more model parameters as a JSON object", short="-m", metavar="JSON",
      alias=True, config=True),
    # SageMaker's invoke headers
    P("custom_attributes", INVOKE, "str", "X-Amzn-SageMaker-Custom-Attributes, e.g. accept_eula=true",
      header=H + "Custom-Attributes", boto="CustomAttributes", max_length=1024, alias=True, config=True),
    P("inference_component", INVOKE, "str", "inference component name", header=H + "Inference-Component",
      boto="InferenceComponentName", max_length=63, alias=True, config=True),
    P("target_variant", INVOKE, "str", "production variant to call", header=H + "Target-Variant",
      boto="TargetVariant", max_length=63, alias=True, config=True),
    P("target_model", INVOKE, "str", "model of a multi-model endpoint", header=H + "Target-Model",
      boto="TargetModel", max_length=1024, streams=False, alias=True),
    P("target_container_hostname", INVOKE, "str", "container of a multi-container endpoint",
      header=H + "Target-Container-Hostname", boto="TargetContainerHostname", max_length=63, alias=True),
    P("inference_id", INVOKE, "str", "id recorded with the request", header=H + "Inference-Id", boto="InferenceId",
      max_length=64),
    P("session_id", INVOKE, "str", "stateful session id, or NEW_SESSION", header=H + "Session-Id", boto="SessionId",
      max_length=256),
    P("enable_explanations", INVOKE, "str", "SageMaker Clarify explanations expression",
      header=H + "Enable-Explanations", boto="EnableExplanations", max_length=64, streams=False),
    # where, for this cell (alias keys too)
    P("region", SESSION, "str", "region for this cell only", alias=True),
    P("profile", SESSION, "str", "profile for this cell only", alias=True),
    P("role_arn", SESSION, "str", "assume this role", flag=False, alias=True),
    P("endpoint_url", SESSION, "str", "runtime URL (VPC endpoint, local server)", flag=False, alias=True),
    # document QA
    P("docs", QA, "str", "answer the cell's question from these documents", variable=True, metavar="VAR|GLOB"),
    P("template", QA, "str", "QA template (string or PromptTemplate) with {context} and {question}",
      variable=True, metavar="VAR"),
    P("mode", QA, "str", "QA mode", choices=("auto", "stuff", "map-reduce", "refine", "retrieve")),
    P("retrieve", QA, "int", "retrieval QA: send only the K chunks most similar to the question", low=1, high=100,
      metavar="K", alias=True),
    P("embeddings", QA, "str", "embeddings endpoint or alias for retrieval QA", metavar="ENDPOINT", alias=True,
      config=True),
    P("embeddings_handler", QA, "str", "embeddings format: tei-embedding, jumpstart-embedding, or auto (detect)",
      alias=True),
    P("allow_partial", QA, "bool", "accept an answer built from fewer chunks than planned (it says so)"),
    P("context_tokens", QA, "int", "the endpoint's context size for QA (tokens)", default=2048, low=64,
      alias=True, config=True),
    # batches
    P("batch", BATCH, "str", "run the cell once per item of VAR (list, records or DataFrame): {text} or {item} "
      "is the item, {field} a record's field (every record needs it)", variable=True, metavar="VAR"),
    P("column", BATCH, "str", "batch: the field of each record to fill {text} (default: the whole item)"),
    P("concurrency", BATCH, "int", "batch and QA map: calls in flight", default=8, low=1, high=256, config=True),
    P("max_calls", BATCH, "int", "a batch or QA run above this many calls asks for --yes first", default=200, low=1,
      flag=False, config=True),
    P("yes", BATCH, "bool", "go ahead with a batch or QA run above max_calls"),
    P("resume", BATCH, "bool", "batch: load the items an earlier run of this cell finished; call only the rest"),
    # asynchronous inference
    P("async_", ASYNC, "bool", "asynchronous inference: the request goes to S3, the answer is collected from S3 "
      "(automatic for async endpoints)", alias=True),
    P("s3_input", ASYNC, "str", "async: where request bodies are uploaded (default: the bucket of the endpoint's "
      "S3OutputPath)", metavar="S3URI", alias=True),
    P("request_ttl", ASYNC, "int", "async: seconds a request may wait in the endpoint's queue (RequestTTLSeconds)",
      low=60, high=21600, metavar="SECONDS", alias=True),
    P("invocation_timeout", ASYNC, "int", "async: seconds the container may work on one request "
      "(InvocationTimeoutSeconds)", low=1, high=3600, metavar="SECONDS", alias=True),
    P("max_wait", ASYNC, "float", "async: seconds to wait for an answer before leaving it to `%sagemaker resume`",
      default=3600.0, low=1, metavar="SECONDS", alias=True),
    # output
    P("out", VIEW, "str", "store the Result in VAR (also: `VAR <<` before ENDPOINT)", short="-o", metavar="VAR"),
    P("format", VIEW, "str", "how the answer renders", default="markdown", choices=("markdown", "text", "json"),
      short="-f", config=True),
)

# Settings that are not per call: `%sagemaker config` keys and `%config` traits only.
SETTINGS: tuple[Param, ...] = (
    P("endpoint", CALL, "str", "endpoint or alias used when a cell names none", default="", flag=False,
      config=True),
    P("debug", VIEW, "bool", "full tracebacks instead of one-paragraph errors", default=False, flag=False,
      config=True),
    P("log", VIEW, "bool", "journal every call (prompt, answer, timing) in the SQLite file under home", default=True,
      flag=False, config=True),
    P("home", VIEW, "str", "folder of the journal and aliases (default $SM_MAGIC_HOME or ~/.sm_magic)", default="",
      flag=False, config=True),
)

# Session settings: `%sagemaker config` keys applied to the session (botocore's Config).
SESSION_SETTINGS: tuple[Param, ...] = (
    P("read_timeout", SESSION, "float", "seconds to wait for an answer (containers must answer in 60 s)",
      default=80.0, low=1, flag=False),
    P("connect_timeout", SESSION, "float", "seconds to wait for a connection", default=10.0, low=0.1, flag=False),
    P("max_attempts", SESSION, "int", "attempts per call, retries included", default=4, low=1, high=20, flag=False),
    P("retry_mode", SESSION, "str", "botocore retry mode", default="standard", choices=("standard", "adaptive",
                                                                                          "legacy"), flag=False),
    P("max_pool_connections", SESSION, "int", "HTTP connections kept per client", default=32, low=1, high=1024,
      flag=False),
    P("retry_read_timeouts", SESSION, "bool", "retry a call whose answer timed out (the model runs again)",
      default=False, flag=False),
)

BY_NAME: dict[str, Param] = {p.name: p for p in (*PARAMS, *SETTINGS, *SESSION_SETTINGS)}
MODEL_PARAMS = tuple(p.name for p in PARAMS if p.section == MODEL and p.type != "json")
INVOKE_PARAMS = tuple(p for p in PARAMS if p.section == INVOKE)
CONFIG_PARAMS = tuple(p for p in (*SETTINGS, *PARAMS) if p.config)
ALIAS_PARAMS = tuple(p for p in PARAMS if p.alias)
VARIABLE_PARAMS = frozenset(p.name for p in PARAMS if p.variable)


def closest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean x?' or ''."""
    import difflib

    near = difflib.get_close_matches(name, list(choices), n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(near)}?" if near else ""


def lookup(name: str, among: Iterable[Param], what: str) -> Param:
    """The param called ``name`` (dashes allowed) among ``among``; a clear error otherwise."""
    table = {p.name: p for p in among}
    key = name.strip().replace("-", "_")
    key = key + "_" if key + "_" in table else key  # async → async_
    if key not in table:
        raise ConfigError(f"Unknown {what} '{name}'.{closest(key, table)} Known: {', '.join(table)}.")
    return table[key]


def model_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """The model parameters among ``values`` (``model_kwargs`` merged under the named ones)."""
    params = dict(values.get("model_kwargs") or {})
    params.update({k: values[k] for k in MODEL_PARAMS if k in values and not unset(values[k])})
    return own_copy(params)


def unset(value: Any) -> bool:
    """None, or an empty text, list or dict (asked by type: a numpy number compared with [] is an array)."""
    return value is None or (value.__class__ in (str, list, dict) and not value)


def own_copy(params: Mapping[str, Any]) -> dict[str, Any]:
    """A call's own parameters: r.params changed later changes neither the parsed cell line, the alias
    they came from, nor the next call (lists and dicts copied; scalars shared)."""
    return {k: copy.deepcopy(v) if isinstance(v, list | dict) else v for k, v in params.items()}
