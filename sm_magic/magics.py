"""``%%sagemaker`` (the cell is the prompt) and ``%sagemaker`` (session, endpoints, handlers, ...).

The magics parse, call the layers below through the shell's :class:`~sm_magic.workspace.State`,
and render. Errors render as one paragraph (their ``explain()``) and are re-raised so
"Run all" stops.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import MagicArgumentParser, argument, magic_arguments
from IPython.utils.process import arg_split
from traitlets import Bool, Float, Int, Unicode, observe

from sm_magic.aliases import PARAMS, Alias, AliasStore
from sm_magic.display import LiveText, Table, Text
from sm_magic.errors import ConfigError, SageMakerError
from sm_magic.interpolate import interpolate
from sm_magic.options import InvokeOptions
from sm_magic.result import FORMATS, Result
from sm_magic.workspace import CallSpec, State

_TARGET = re.compile(r"^\s*([A-Za-z_]\w*)\s*<<\s*(.*)$")
LOCAL_DEFAULT = "http://127.0.0.1:8080"


@functools.cache
def line_parser() -> MagicArgumentParser:
    """The line magic's parser (built on first use: %load_ext stays cheap)."""
    parser = MagicArgumentParser(prog="sagemaker", add_help=False)
    sub = parser.add_subparsers(dest="command", parser_class=MagicArgumentParser)

    p = sub.add_parser("session", help="show or change where calls go and with which credentials")
    p.add_argument("--profile", help="a named profile from ~/.aws/config or ~/.aws/credentials")
    p.add_argument("--region", help="AWS region, e.g. us-west-2")
    p.add_argument("--role-arn", help="assume this role; credentials refresh before they expire")
    p.add_argument("--external-id", help="external id for the role")
    p.add_argument("--role-session-name", help="session name for the role")
    p.add_argument("--duration", type=int, help="assumed-role duration in seconds")
    p.add_argument("--endpoint-url", help="send runtime calls to this URL (VPC endpoint, local server)")
    p.add_argument("--client", metavar="VAR", help="use a boto3 sagemaker-runtime client from the notebook")
    p.add_argument("--boto-session", metavar="VAR", help="use a boto3.Session from the notebook")
    p.add_argument("--local", nargs="?", const="", metavar="URL",
                   help=f"use a local endpoint (sm-magic serve; default $SM_MAGIC_LOCAL_URL or {LOCAL_DEFAULT})")
    p.add_argument("--read-timeout", type=float, help="seconds to wait for an answer (default 80)")
    p.add_argument("--reset", action="store_true", help="back to the default credential chain")

    p = sub.add_parser("endpoints", help="list endpoints, or describe one")
    p.add_argument("action", nargs="?", choices=["list", "describe"], default="list")
    p.add_argument("name", nargs="?", help="endpoint to describe, or a filter for the list")

    p = sub.add_parser("handlers", help="list, register or remove content handlers")
    p.add_argument("action", nargs="?", choices=["list", "register", "remove", "json", "detect"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("var", nargs="?", help="handler object in the notebook (register)")
    p.add_argument("--request", help="json: request template, e.g. '{\"inputs\": \"{prompt}\"}'")
    p.add_argument("--response", help="json: path of the answer, e.g. '[0].generated_text'")
    p.add_argument("--stream-path", help="json: path of a streamed token, e.g. 'token.text'")

    p = sub.add_parser("alias", help="saved endpoint aliases (plain INI file)")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("name", nargs="?")
    p.add_argument("endpoint", nargs="?")
    for flag in ("--profile", "--region", "--role-arn", "--endpoint-url", "--handler", "--inference-component",
                 "--target-variant", "--custom-attributes"):
        p.add_argument(flag)
    p.add_argument("--context-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--stop", action="append")
    p.add_argument("--seed", type=int)

    p = sub.add_parser("history", help="this kernel's calls; `history VAR` stores them")
    p.add_argument("var", nargs="?")

    p = sub.add_parser("config", help="show settings and where they come from; set with key=value")
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE")

    p = sub.add_parser("chat", help="chat histories: `chat reset [ENDPOINT]`, `chat show [ENDPOINT]`")
    p.add_argument("action", choices=["reset", "show"])
    p.add_argument("endpoint", nargs="?")

    p = sub.add_parser("retry", help="re-run the failed items of a batch stored in VAR")
    p.add_argument("var")
    p.add_argument("--concurrency", type=int)

    p = sub.add_parser("debug", help="full tracebacks on or off")
    p.add_argument("switch", choices=["on", "off"])

    sub.add_parser("panel", help="open the widget panel")
    sub.add_parser("help", help="this help")
    return parser


def subparsers() -> dict[str, MagicArgumentParser]:
    return line_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def line_help() -> str:
    """The line magic's subcommands and their options."""
    parts = []
    for parser in subparsers().values():
        parts.append(_usage(parser))
    return "\n".join(parts)


def option_reference() -> str:
    """The README's option reference, generated from the magics' own parsers."""
    rows = ["| option | meaning |", "|---|---|"]
    for action in SageMakerMagics.sagemaker.parser._actions:
        flags = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest.upper()}`"
        meaning = (action.help or "").replace("|", "\\|")
        if action.choices:
            meaning += f" ({', '.join(map(str, action.choices))})"
        rows.append(f"| {flags} | {meaning} |")
    return "\n".join(rows) + "\n\n```\n" + line_help() + "\n```"


def _usage(parser: MagicArgumentParser) -> str:
    """``%sagemaker NAME [options]`` (IPython's formatter adds a ``::`` block prefix)."""
    return " ".join(parser.format_usage().replace("::\n\n  ", "", 1).split())  # one line, any terminal


def _argv(line: str) -> list[str]:
    """Shell-like words: quotes and spaces survive (JSON in -m, stop sequences)."""
    try:
        return arg_split(line, posix=True)
    except ValueError as e:
        raise UsageError(f"Could not read the options ({e}): {line!r}. Close the quote, or escape it.") from None


def _unescape(text: str) -> str:
    """``\\n`` and ``\\t`` typed in a flag mean a newline and a tab (stop sequences)."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"-m/--model-kwargs is not valid JSON ({e}): {text!r}. "
                          "Quote it as one argument, e.g. -m '{\"do_sample\": true}'.") from None
    if not isinstance(value, dict):
        raise ConfigError("-m/--model-kwargs must be a JSON object, e.g. '{\"do_sample\": true}'.")
    return value


@magics_class
class SageMakerMagics(Magics):
    """Run prompts against Amazon SageMaker endpoints; set with ``%config SageMakerMagics.<name>``."""

    default_endpoint = Unicode("", help="Endpoint or alias used when a cell names none.").tag(config=True)
    default_handler = Unicode("auto", help="Content handler: a preset, a registered name, or auto.").tag(config=True)
    output_format = Unicode("markdown", help="markdown, text or json.").tag(config=True)
    stream = Bool(False, help="Stream answers by default.").tag(config=True)
    concurrency = Int(8, help="Default concurrency for --batch and QA map steps.").tag(config=True)
    context_tokens = Int(2048, help="Default context size (tokens) for --docs.").tag(config=True)
    read_timeout = Float(80.0, help="Seconds to wait for an answer.").tag(config=True)
    short_errors = Bool(True, help="One-paragraph errors; False shows full tracebacks.").tag(config=True)
    aliases_file = Unicode("", help="Path of the aliases INI file (default ~/.sm_magic/endpoints.ini).").tag(
        config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        store = AliasStore(self.aliases_file or None)
        self.state = State(aliases=store, endpoint=self.default_endpoint, handler=self.default_handler,
                           stream=self.stream, concurrency=self.concurrency,
                           context_tokens=self.context_tokens, debug=not self.short_errors)
        if self.read_timeout != self.state.session.settings.read_timeout:
            self.state.set_session(self.state.session.with_changes(read_timeout=self.read_timeout))

    @observe("default_endpoint", "default_handler", "stream", "concurrency", "context_tokens", "short_errors",
             "read_timeout", "aliases_file")
    def _config_changed(self, change: Any) -> None:
        state, name, new = self.state, change["name"], change["new"]
        if name == "default_endpoint":
            state.endpoint = new
        elif name == "default_handler":
            state.handler = new
        elif name == "short_errors":
            state.debug = not new
        elif name == "read_timeout":
            state.set_session(state.session.with_changes(read_timeout=new))
        elif name == "aliases_file":
            state.aliases = AliasStore(new or None)
        else:
            setattr(state, name, new)

    # -- the magic ---------------------------------------------------------------------------------
    @magic_arguments()
    @argument("endpoint", nargs="?", help="endpoint name or saved alias (default: the configured one)")
    @argument("-o", "--out", metavar="VAR", help="store the Result in VAR (also: `VAR <<` before ENDPOINT)")
    @argument("-f", "--format", choices=FORMATS, help="how the answer renders (default markdown)")
    @argument("--stream", action="store_true", default=None, help="show tokens as they arrive")
    @argument("--no-stream", dest="stream", action="store_false", help="do not stream (overrides the default)")
    @argument("--handler", help="content handler: a preset, a registered name, or auto (detect)")
    @argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    @argument("--max-new-tokens", type=int, help="most tokens to generate")
    @argument("--top-p", type=float, help="nucleus sampling probability")
    @argument("--stop", action="append", help="stop sequence (repeatable; \\n means a newline)")
    @argument("--seed", type=int, help="sampling seed")
    @argument("-m", "--model-kwargs", help="more model parameters as a JSON object")
    @argument("--custom-attributes", help="X-Amzn-SageMaker-Custom-Attributes, e.g. accept_eula=true")
    @argument("--inference-component", help="inference component name")
    @argument("--target-variant", help="production variant to call")
    @argument("--target-model", help="model of a multi-model endpoint")
    @argument("--target-container-hostname", help="container of a multi-container endpoint")
    @argument("--inference-id", help="id recorded with the request")
    @argument("--session-id", help="stateful session id, or NEW_SESSION")
    @argument("--region", help="region for this cell only")
    @argument("--profile", help="profile for this cell only")
    @argument("--chat", action="store_true", help="conversation mode: the endpoint's chat history is sent too")
    @argument("--no-interpolate", action="store_true", help="send {braces} as written")
    @argument("--dry-run", action="store_true", help="show the exact request without sending it")
    @argument("--docs", metavar="VAR|GLOB", help="answer the cell's question from these documents")
    @argument("--template", metavar="VAR", help="QA template (string or PromptTemplate) with {context} and {question}")
    @argument("--mode", choices=["auto", "stuff", "map-reduce", "refine"], default="auto", help="QA mode")
    @argument("--context-tokens", type=int, help="the endpoint's context size for QA (tokens)")
    @argument("--batch", metavar="VAR", help="run the cell once per item of VAR (list, records or DataFrame)")
    @argument("--column", help="batch: the field of each record to fill {text} (default: the whole item)")
    @argument("--concurrency", type=int, help="batch and QA map: calls in flight")
    @line_cell_magic
    @no_var_expand  # IPython would evaluate {expr} in the options line; we never evaluate
    def sagemaker(self, line: str, cell: str | None = None) -> Any:
        """Run the cell as a prompt on a SageMaker endpoint; ``%sagemaker COMMAND`` manages the session.

        Cell: ``%%sagemaker [VAR <<] [ENDPOINT] [options]``; ``{name}`` in the cell is filled from
        the notebook's variables (looked up, never evaluated).
        Line: ``%sagemaker session|endpoints|handlers|alias|history|config|chat|retry|debug|panel|help``.
        """
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except SageMakerError as e:
            e.show_traceback = self.state.debug
            raise

    # -- cell ----------------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> Any:
        target = None
        match = _TARGET.match(line)
        if match:
            target, line = match.groups()
        args = self.sagemaker.parser.parse_args(_argv(line))
        target = args.out or target
        namespace = self.shell.user_ns
        prompt = cell.strip("\n")
        filled = prompt if args.no_interpolate or args.batch else interpolate(prompt, namespace)
        spec = CallSpec(
            prompt=filled, endpoint=args.endpoint, handler=args.handler, params=self._params(args),
            options=InvokeOptions(
                custom_attributes=args.custom_attributes, inference_component=args.inference_component,
                target_variant=args.target_variant, target_model=args.target_model,
                target_container_hostname=args.target_container_hostname, inference_id=args.inference_id,
                session_id=args.session_id),
            region=args.region, profile=args.profile, template=prompt, chat=args.chat,
        )
        fmt = args.format or self.output_format
        if args.docs:
            result = self._docs(args, spec, namespace)
        elif args.batch:
            result = self._batch(args, spec, namespace)
        elif args.dry_run:
            result = self.state.call(spec, dry_run=True)
        elif self.state.stream if args.stream is None else args.stream:
            result, error = self._stream(spec, fmt)
            if error is not None:  # keep what arrived, then stop "Run all"
                self.state.last = result
                if target:
                    namespace[target] = result
                raise error
        else:
            result = self.state.call(spec)
        if isinstance(result, Result):
            result.format = fmt
        self.state.last = result
        if target:
            namespace[target] = result
        return None if isinstance(result, Result) and result.streamed else result

    def _params(self, args: Any) -> dict[str, Any]:
        params = _json_arg(args.model_kwargs) if args.model_kwargs else {}
        for key in PARAMS:
            value = getattr(args, key)
            if value is not None:
                params[key] = [_unescape(v) for v in value] if key == "stop" else value
        return params

    def _stream(self, spec: CallSpec, fmt: str) -> tuple[Result, SageMakerError | None]:
        """Show tokens as they arrive; Ctrl-C stops and keeps them. Returns the result and any error."""
        stream, done = self.state.open_stream(spec)
        live = LiveText()
        error: SageMakerError | None = None
        try:
            for chunk in stream:
                live.add(chunk)
        except KeyboardInterrupt:
            stream.close()
        except SageMakerError as e:
            error = e
        done(error)
        result = stream.result
        assert result is not None
        result.format = fmt
        live.finish(result)
        return result, error

    def _value(self, name: str, namespace: dict[str, Any], what: str) -> Any:
        if name in namespace:
            return namespace[name]
        near = difflib.get_close_matches(name, [n for n in namespace if not n.startswith("_")], n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"{what} '{name}' is not defined in the notebook.{hint}")

    def _docs(self, args: Any, spec: CallSpec, namespace: dict[str, Any]) -> Any:
        docs = namespace.get(args.docs, args.docs)
        template = self._value(args.template, namespace, "Template") if args.template else None
        context = args.context_tokens or self._alias_context(spec) or self.state.context_tokens
        if args.dry_run:
            plan = self.state.plan(spec, docs, template=template, mode=args.mode, context_tokens=context)
            return Text(plan.describe(), title=f"Dry run: document QA on {spec.endpoint or self.state.endpoint}")
        return self.state.answer(spec, docs, template=template, mode=args.mode, context_tokens=context,
                                 concurrency=args.concurrency)

    def _alias_context(self, spec: CallSpec) -> int | None:
        alias = self.state.aliases.get(spec.endpoint or self.state.endpoint)
        return alias.context_tokens if alias else None

    def _batch(self, args: Any, spec: CallSpec, namespace: dict[str, Any]) -> Any:
        items = self._value(args.batch, namespace, "Batch variable")
        return self.state.batch(spec, items, namespace, column=args.column, concurrency=args.concurrency,
                                dry_run=args.dry_run)

    # -- line ----------------------------------------------------------------------------------------
    def _line(self, line: str) -> Any:
        words = line.split()
        if not words or words[0] == "help":
            return Text(line_help(), title="%sagemaker commands (cell options: %%sagemaker?)")
        commands = list(subparsers())
        if words[0] not in commands:
            near = difflib.get_close_matches(words[0], commands, n=2)
            hint = f"Did you mean {' or '.join(near)}?" if near else f"Commands: {', '.join(commands)}."
            raise UsageError(f"Unknown %sagemaker command '{words[0]}'. {hint}")
        try:
            args = line_parser().parse_args(_argv(line))
        except UsageError as e:
            raise UsageError(f"{e}\nusage: {_usage(subparsers()[words[0]])}") from None
        return getattr(self, f"_cmd_{args.command}")(args)

    def _cmd_session(self, args: Any) -> Any:
        from sm_magic.session import Session, SessionSettings
        from sm_magic.workspace import session_from_environment

        state, ns = self.state, self.shell.user_ns
        if args.reset:
            state.set_session(session_from_environment())
        elif args.local is not None:
            import os

            url = args.local or os.environ.get("SM_MAGIC_LOCAL_URL") or LOCAL_DEFAULT
            state.set_session(Session.local(url, region=args.region or "us-east-1"))
        elif args.client or args.boto_session:
            client = self._value(args.client, ns, "Client") if args.client else None
            boto = self._value(args.boto_session, ns, "boto3 session") if args.boto_session else None
            model = getattr(getattr(client, "meta", None), "service_model", None)
            if model is not None and model.service_name != "sagemaker-runtime":
                raise ConfigError(f"--client needs a 'sagemaker-runtime' client, not '{model.service_name}'.")
            state.set_session(Session(SessionSettings(region=args.region), client=client, boto_session=boto))
        else:
            changes = {k: v for k, v in {
                "profile": args.profile, "region": args.region, "role_arn": args.role_arn,
                "external_id": args.external_id, "role_session_name": args.role_session_name,
                "duration_seconds": args.duration, "endpoint_url": args.endpoint_url,
                "read_timeout": args.read_timeout}.items() if v is not None}
            if changes:
                state.set_session(state.session.with_changes(**changes))
        return self._session_table()

    def _session_table(self) -> Table:
        session = self.state.session
        rows = [{"setting": k, "value": v} for k, v in session.describe().items()]
        try:
            identity = session.identity()
            rows += [{"setting": "account", "value": identity["account"]},
                     {"setting": "arn", "value": identity["arn"]}]
            rows += [{"setting": k, "value": v} for k, v in session.describe().items()
                     if k in ("credentials", "access_key", "expires") and not any(r["setting"] == k for r in rows)]
        except SageMakerError as e:
            rows.append({"setting": "identity", "value": e.explain()})
        return Table(rows, title="SageMaker session")

    def _cmd_endpoints(self, args: Any) -> Any:
        from sm_magic.endpoints import describe_endpoint, list_endpoints

        if args.action == "describe":
            if not args.name:
                raise UsageError("usage: %sagemaker endpoints describe NAME")
            info = describe_endpoint(self.state.session, args.name)
            return Table([{"field": k, "value": v} for k, v in info.items()], title=f"Endpoint {args.name}")
        rows = list_endpoints(self.state.session, args.name or "")
        return Table(rows, title=f"Endpoints in {self.state.session.region}", empty="No endpoints found.")

    def _cmd_handlers(self, args: Any) -> Any:
        registry = self.state.registry
        if args.action == "register":
            if not (args.name and args.var):
                raise UsageError("usage: %sagemaker handlers register NAME VAR")
            registry.register(args.name, self._value(args.var, self.shell.user_ns, "Handler"))
        elif args.action == "remove":
            if not args.name:
                raise UsageError("usage: %sagemaker handlers remove NAME")
            registry.remove(args.name)
        elif args.action == "json":
            from sm_magic.handlers.presets import JSONTemplate

            if not (args.name and args.request and args.response):
                raise UsageError("usage: %sagemaker handlers json NAME --request TEMPLATE --response PATH "
                                 "[--stream-path PATH]")
            try:
                handler = JSONTemplate(args.request, args.response, args.stream_path, name=args.name)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--request is not valid JSON ({e}).") from None
            registry.register(args.name, handler)
        elif args.action == "detect":
            endpoint = args.name or self.state.endpoint
            if not endpoint:
                raise UsageError("usage: %sagemaker handlers detect ENDPOINT")
            found = self.state.detect(self.state.session, endpoint)
            return Table([{"endpoint": endpoint, "handler": found.handler, "image": found.image,
                           "why": found.reason}], title="Detected handler")
        return Table(registry.describe(), title="Content handlers")

    def _cmd_alias(self, args: Any) -> Any:
        store = self.state.aliases
        if args.action == "add":
            if not (args.name and args.endpoint):
                raise UsageError("usage: %sagemaker alias add NAME ENDPOINT [--region R --profile P --handler H ...]")
            params = {k: getattr(args, k) for k in PARAMS if getattr(args, k) is not None}
            store.add(Alias(args.name, args.endpoint, profile=args.profile, region=args.region,
                            role_arn=args.role_arn, endpoint_url=args.endpoint_url, handler=args.handler,
                            inference_component=args.inference_component, target_variant=args.target_variant,
                            custom_attributes=args.custom_attributes, context_tokens=args.context_tokens,
                            params=params))
        elif args.action == "remove":
            if not args.name:
                raise UsageError("usage: %sagemaker alias remove NAME")
            store.remove(args.name)
        rows = [{"alias": a.name, "endpoint": a.endpoint, "region": a.region, "profile": a.profile,
                 "handler": a.handler, "params": json.dumps(a.params) if a.params else None} for a in store]
        return Table(rows, title=f"Aliases ({store.path})", empty="No aliases saved yet.")

    def _cmd_history(self, args: Any) -> Any:
        rows = [entry.row() for entry in self.state.history]
        if args.var:
            self.shell.user_ns[args.var] = rows
        return Table(rows, title="Calls in this kernel", empty="No calls yet.")

    def _cmd_config(self, args: Any) -> Any:
        from sm_magic.config import apply, effective

        for assignment in args.assignments:
            apply(self.state, assignment)
        return Table(effective(self.state, self), title="sm_magic settings")

    def _cmd_chat(self, args: Any) -> Any:
        endpoint = args.endpoint or self.state.endpoint
        if args.action == "reset":
            if endpoint:
                self.state.chats.pop(endpoint, None)
            else:
                self.state.chats.clear()
            return Text(f"Chat history cleared ({endpoint or 'all endpoints'}).")
        messages = self.state.chats.get(endpoint, [])
        return Table([{"role": m["role"], "content": m["content"]} for m in messages],
                     title=f"Chat with {endpoint}", empty="No messages yet.")

    def _cmd_retry(self, args: Any) -> Any:
        from sm_magic.batch import BatchResult

        batch = self._value(args.var, self.shell.user_ns, "Batch")
        if not isinstance(batch, BatchResult):
            raise ConfigError(f"'{args.var}' is a {type(batch).__name__}, not a batch result (--batch ... --out VAR).")
        return batch.retry(args.concurrency)

    def _cmd_debug(self, args: Any) -> Any:
        self.state.debug = args.switch == "on"
        return Text(f"Full tracebacks {'on' if self.state.debug else 'off'}.")

    def _cmd_panel(self, args: Any) -> Any:
        from sm_magic.widgets.panel import Panel

        return Panel(self.state, self.shell).widget

    def _cmd_help(self, args: Any) -> Any:
        return Text(line_help())
