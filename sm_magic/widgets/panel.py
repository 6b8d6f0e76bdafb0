"""``%sagemaker panel``: the magics' features as a form, on the same shell State.

Widgets are linked to the State's traits (endpoint, handler, parameters, stream...), so what the
panel sets a following ``%%sagemaker`` cell uses, and the reverse. Callbacks read the form and call
the State, in a worker thread so that Stop can interrupt a stream. No AWS logic lives here.
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
from typing import Any

import ipywidgets as w
from traitlets import link

from sm_magic.display import Pacer
from sm_magic.errors import SageMakerError
from sm_magic.interpolate import interpolate
from sm_magic.result import Result
from sm_magic.workspace import CallSpec, State

LOCAL_DEFAULT = "http://127.0.0.1:8080"
QA_MODES = [("no documents", ""), ("auto", "auto"), ("stuff", "stuff"), ("map-reduce", "map-reduce"),
            ("refine", "refine")]


def _text(description: str, css: str, placeholder: str = "", password: bool = False) -> w.Text:
    cls = w.Password if password else w.Text
    field = cls(description=description, placeholder=placeholder, continuous_update=False,
                style={"description_width": "9em"}, layout=w.Layout(width="32em"))
    field.add_class(css)
    return field


def _button(label: str, css: str, style: str = "") -> w.Button:
    button = w.Button(description=label, button_style=style)
    button.add_class(css)
    return button


def _pre(text: str) -> str:
    return f'<pre style="white-space: pre-wrap; margin: 0">{html.escape(text)}</pre>'


class Panel:
    """The form. ``widget`` is what a cell displays."""

    def __init__(self, state: State, shell: Any = None):
        self.state = state
        self.shell = shell
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._links: list[Any] = []
        self._local = False
        self._build()
        self._wire()

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        # Session
        self.profile = w.Dropdown(description="Profile", options=self._profiles(), style={"description_width": "9em"})
        self.profile.add_class("sm-profile")
        self.region = _text("Region", "sm-region", "us-east-1")
        self.role_arn = _text("Role ARN", "sm-role-arn", "arn:aws:iam::123456789012:role/name")
        self.external_id = _text("External id", "sm-external-id", password=True)
        self.endpoint_url = _text("Endpoint URL", "sm-endpoint-url", "(AWS)")
        self.local_button = _button("Local endpoint", "sm-local")
        self.access_key = _text("Access key id", "sm-access-key", "optional", password=True)
        self.secret_key = _text("Secret key", "sm-secret-key", "optional", password=True)
        self.session_token = _text("Session token", "sm-session-token", "optional", password=True)
        self.connect = _button("Connect", "sm-connect", "primary")
        self.identity = w.HTML()
        self.identity.add_class("sm-identity")
        session_tab = w.VBox([self.profile, self.region, self.role_arn, self.external_id,
                              w.HBox([self.endpoint_url, self.local_button]),
                              w.HTML("<i>Static keys are used once to build the session, then cleared.</i>"),
                              self.access_key, self.secret_key, self.session_token, self.connect, self.identity])

        # Endpoint
        self.endpoint = w.Combobox(description="Endpoint", placeholder="name or alias", ensure_option=False,
                                   continuous_update=False, style={"description_width": "9em"})
        self.endpoint.add_class("sm-endpoint")
        self.refresh = _button("↻ Endpoints", "sm-refresh")
        self.endpoint_list = w.HTML()
        self.endpoint_list.add_class("sm-endpoint-list")
        self.alias = w.Dropdown(description="Alias", style={"description_width": "9em"})
        self.alias.add_class("sm-alias")
        self.handler = w.Combobox(description="Handler", ensure_option=False, continuous_update=False,
                                  style={"description_width": "9em"})
        self.handler.add_class("sm-handler")
        self.detected = w.HTML()
        self.detected.add_class("sm-detected")
        self.inference_component = _text("Inference comp.", "sm-inference-component")
        self.target_variant = _text("Target variant", "sm-target-variant")
        self.custom_attributes = _text("Custom attrs", "sm-custom-attributes", "accept_eula=true")
        endpoint_tab = w.VBox([w.HBox([self.endpoint, self.refresh]), self.endpoint_list, self.alias,
                               w.HBox([self.handler, self.detected]), self.inference_component,
                               self.target_variant, self.custom_attributes])

        # Parameters
        self.temperature = _text("Temperature", "sm-temperature", "container default")
        self.max_new_tokens = _text("Max new tokens", "sm-max-new-tokens", "container default")
        self.top_p = _text("Top-p", "sm-top-p", "container default")
        self.stop_sequences = w.Textarea(description="Stop (1/line)", continuous_update=False,
                                         style={"description_width": "9em"}, layout=w.Layout(width="32em"))
        self.stop_sequences.add_class("sm-stop")
        self.extra = w.Textarea(description="Extra JSON", placeholder='{"do_sample": true}', continuous_update=False,
                                style={"description_width": "9em"}, layout=w.Layout(width="32em"))
        self.extra.add_class("sm-extra")
        self.param_errors = w.HTML()
        self.param_errors.add_class("sm-param-errors")
        params_tab = w.VBox([self.temperature, self.max_new_tokens, self.top_p, self.stop_sequences, self.extra,
                             self.param_errors])

        # Prompt
        self.prompt = w.Textarea(placeholder="Prompt; {name} is filled from the notebook's variables",
                                 continuous_update=False, layout=w.Layout(width="100%", height="10em"))
        self.prompt.add_class("sm-prompt")
        self.docs = w.Dropdown(description="Documents", style={"description_width": "9em"})
        self.docs.add_class("sm-docs")
        self.upload = w.FileUpload(accept=".txt,.md,.markdown", multiple=True, description="Upload")
        self.upload.add_class("sm-upload")
        self.qa_mode = w.Dropdown(description="QA mode", options=QA_MODES, value="", style={"description_width": "9em"})
        self.qa_mode.add_class("sm-qa-mode")
        self.stream = w.Checkbox(description="Stream", indent=False)
        self.stream.add_class("sm-stream")
        self.run = _button("Run", "sm-run", "success")
        self.stop = _button("Stop", "sm-stop", "danger")
        self.dry_run = _button("Dry run", "sm-dry-run")
        self.busy = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="8em",
                                                                                          visibility="hidden"))
        self.busy.add_class("sm-busy")
        prompt_tab = w.VBox([self.prompt, w.HBox([self.docs, self.upload]), self.qa_mode,
                             w.HBox([self.run, self.stream, self.stop, self.dry_run, self.busy])])

        # History
        self.history = w.Select(rows=8, layout=w.Layout(width="100%"))
        self.history.add_class("sm-history")
        self.restore = _button("Restore prompt and settings", "sm-restore")
        history_tab = w.VBox([self.history, self.restore])

        self.tabs = w.Tab(children=[session_tab, endpoint_tab, params_tab, prompt_tab, history_tab])
        for i, title in enumerate(["Session", "Endpoint", "Parameters", "Prompt", "History"]):
            self.tabs.set_title(i, title)
        self.tabs.selected_index = 3
        self.status = w.HTML()
        self.status.add_class("sm-status")
        self.answer = w.HTML()
        self.answer.add_class("sm-answer")
        self.footer = w.HTML()
        self.footer.add_class("sm-footer")
        self.widget = w.VBox([self.tabs, self.status, self.answer, self.footer])
        self.widget.add_class("sm-panel")
        self._refresh_choices()

    # -- wiring --------------------------------------------------------------------------------
    def _wire(self) -> None:
        s = self.state
        self._links = [link((s, "endpoint"), (self.endpoint, "value")), link((s, "handler"), (self.handler, "value")),
                       link((s, "stream"), (self.stream, "value")),
                       link((s, "inference_component"), (self.inference_component, "value")),
                       link((s, "target_variant"), (self.target_variant, "value")),
                       link((s, "custom_attributes"), (self.custom_attributes, "value"))]
        self._show_params()
        s.observe(lambda _: self._show_params(), names=["temperature", "max_new_tokens", "top_p", "stop",
                                                        "model_kwargs"])
        s.observe(lambda change: self._set_busy(change["new"]), names="busy")
        s.observe(lambda _: self._show_history(), names="history_version")
        s.observe(lambda _: self._refresh_choices(), names="session")
        for field in (self.temperature, self.max_new_tokens, self.top_p, self.stop_sequences, self.extra):
            field.observe(lambda _: self._read_params(), names="value")
        self.alias.observe(self._on_alias, names="value")
        self.endpoint.observe(lambda _: self.detected.__setattr__("value", ""), names="value")
        self.local_button.on_click(lambda _: self._use_local())
        self.connect.on_click(lambda _: self._connect())
        self.refresh.on_click(lambda _: self._refresh_endpoints())
        self.run.on_click(lambda _: self._start(dry_run=False))
        self.dry_run.on_click(lambda _: self._start(dry_run=True))
        self.stop.on_click(lambda _: self._stop.set())
        self.restore.on_click(lambda _: self._restore())
        self._show_history()

    def _profiles(self) -> list[str]:
        import boto3

        try:
            return ["(default chain)", *boto3.Session().available_profiles]
        except Exception:
            return ["(default chain)"]

    def _refresh_choices(self) -> None:
        self.handler.options = ["auto", *self.state.registry.names()]
        self.alias.options = [("(none)", ""), *((a.name, a.name) for a in self.state.aliases)]
        namespace = self.shell.user_ns if self.shell is not None else {}
        docs = [n for n, v in namespace.items() if not n.startswith("_") and isinstance(v, str | list | tuple)]
        self.docs.options = [("(none)", ""), *((n, n) for n in sorted(docs))]

    # -- session -----------------------------------------------------------------------------------
    def _use_local(self) -> None:
        self.endpoint_url.value = os.environ.get("SM_MAGIC_LOCAL_URL", LOCAL_DEFAULT)
        self._local = True

    def _connect(self) -> None:
        from sm_magic.session import Session, SessionSettings

        keys = {"access_key_id": self.access_key.value or None, "secret_access_key": self.secret_key.value or None,
                "session_token": self.session_token.value or None}
        for field in (self.access_key, self.secret_key, self.session_token):
            field.value = ""  # used once, never kept in widget state
        url = self.endpoint_url.value.strip() or None
        local = self._local and url
        profile = self.profile.value if self.profile.value != "(default chain)" else None
        settings = SessionSettings(
            profile=profile, region=self.region.value.strip() or ("us-east-1" if local else None),
            endpoint_url=url, control_endpoint_url=url if local else None,
            role_arn=self.role_arn.value.strip() or None, external_id=self.external_id.value or None,
        )
        if local and not keys["access_key_id"]:
            session = Session.local(url, region=settings.region or "us-east-1")
        else:
            for key, value in keys.items():
                setattr(settings, key, value)
            session = Session(settings)
        self.external_id.value = ""
        try:
            identity = session.identity()
        except SageMakerError as e:
            self.identity.value = f'<span style="color: #b00">{html.escape(e.explain())}</span>'
            return
        self.state.set_session(session)
        info = session.describe()
        expiry = f" · credentials expire {info['expires']}" if "expires" in info else ""
        self.identity.value = (f"Connected: account <b>{identity['account']}</b> · {html.escape(identity['arn'])}"
                               f" · region {html.escape(str(session.region))}{expiry}")

    def _refresh_endpoints(self) -> None:
        from sm_magic.endpoints import list_endpoints

        try:
            rows = list_endpoints(self.state.session, details=False)
        except SageMakerError as e:
            self.endpoint_list.value = f'<span style="color: #b00">{html.escape(e.explain())}</span>'
            return
        self.endpoint.options = [r["name"] for r in rows]
        self.endpoint_list.value = "<br>".join(f"{html.escape(r['name'])} — {r['status']}" for r in rows) or "none"

    def _on_alias(self, change: Any) -> None:
        if change["new"]:
            self.state.endpoint = change["new"]

    # -- parameters ----------------------------------------------------------------------------------
    def _show_params(self) -> None:
        s = self.state
        self.temperature.value = "" if s.temperature is None else str(s.temperature)
        self.max_new_tokens.value = "" if s.max_new_tokens is None else str(s.max_new_tokens)
        self.top_p.value = "" if s.top_p is None else str(s.top_p)
        self.stop_sequences.value = "\n".join(s.stop)
        self.extra.value = json.dumps(s.model_kwargs) if s.model_kwargs else ""

    def _read_params(self) -> None:
        """Validate as typed; write the State only when every field is valid."""
        errors = []

        def number(field: w.Text, kind: type, name: str) -> Any:
            text = field.value.strip()
            if not text:
                return None
            try:
                return kind(text)
            except ValueError:
                errors.append(f"{name} must be {'an integer' if kind is int else 'a number'}, not {text!r}")
                return None

        temperature = number(self.temperature, float, "Temperature")
        max_new = number(self.max_new_tokens, int, "Max new tokens")
        top_p = number(self.top_p, float, "Top-p")
        extra: dict = {}
        if self.extra.value.strip():
            try:
                extra = json.loads(self.extra.value)
                if not isinstance(extra, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                errors.append(f"Extra JSON must be a JSON object ({e})")
        self.param_errors.value = "<br>".join(f'<span style="color: #b00">{html.escape(e)}</span>' for e in errors)
        if errors:
            return
        with self.state.hold_trait_notifications():
            self.state.temperature, self.state.max_new_tokens, self.state.top_p = temperature, max_new, top_p
            self.state.stop = [line for line in self.stop_sequences.value.splitlines() if line]
            self.state.model_kwargs = extra

    # -- running ---------------------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.run.disabled = self.dry_run.disabled = busy
        self.busy.layout.visibility = "visible" if busy else "hidden"
        self.busy.bar_style = "info"
        self.busy.value = 0 if busy else 1

    def _documents(self) -> Any:
        uploaded = [f["content"].tobytes().decode("utf-8", "replace") if hasattr(f["content"], "tobytes")
                    else bytes(f["content"]).decode("utf-8", "replace") for f in self.upload.value]
        named = self.shell.user_ns.get(self.docs.value) if self.docs.value and self.shell is not None else None
        docs = ([named] if isinstance(named, str) else list(named or [])) + uploaded
        return docs or None

    def _start(self, dry_run: bool) -> None:
        if self.state.busy:
            return
        self._stop.clear()
        self.status.value = ""
        self.state.busy = True
        self._worker = threading.Thread(target=self._work, args=(dry_run,), daemon=True, name="sm-magic-panel")
        self._worker.start()

    def wait(self, timeout: float = 60) -> None:
        """Block until the running call ends (tests and scripts)."""
        if self._worker is not None:
            self._worker.join(timeout)

    def _work(self, dry_run: bool) -> None:
        try:
            namespace = self.shell.user_ns if self.shell is not None else {}
            template = self.prompt.value
            spec = CallSpec(prompt=interpolate(template, namespace), template=template)
            docs = self._documents()
            if docs is not None and self.qa_mode.value:
                if dry_run:
                    self.answer.value = _pre(self.state.plan(spec, docs, mode=self.qa_mode.value).describe())
                    self.footer.value = "dry run: nothing sent"
                else:
                    self._show(self.state.answer(spec, docs, mode=self.qa_mode.value))
            elif dry_run:
                result = self.state.call(spec, dry_run=True)
                self.answer.value = _pre(result.request.describe() if result.request else "")
                self.footer.value = "dry run: nothing sent"
            elif self.state.stream:
                self._stream(spec)
            else:
                self._show(self.state.call(spec))
        except SageMakerError as e:
            self.status.value = f'<span style="color: #b00">{type(e).__name__}: {html.escape(e.explain())}</span>'
        except Exception as e:  # never let a callback die silently
            self.status.value = f'<span style="color: #b00">{html.escape(f"{type(e).__name__}: {e}")}</span>'
        finally:
            self.state.busy = False

    def _stream(self, spec: CallSpec) -> None:
        stream, done = self.state.open_stream(spec)
        pacer = Pacer()
        error: SageMakerError | None = None
        length = 0
        try:
            for chunk in stream:
                if self._stop.is_set():
                    stream.close()
                    break
                length += len(chunk)
                if pacer.due(length):  # the join below is O(text), so only when due
                    self.answer.value = _pre(stream.text + " ▌")
        except SageMakerError as e:
            error = e
        done(error)
        if stream.result is not None:
            self._show(stream.result)
        if error is not None:
            raise error

    def _show(self, result: Result) -> None:
        self.state.last = result
        if self.state.handler == "auto":
            self.detected.value = f"auto → <b>{html.escape(result.handler)}</b>"
        self.answer.value = _pre(result.text)
        footer = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(result.footer()))
        self.footer.value = f"<small>{footer}</small>"

    # -- history -------------------------------------------------------------------------------------------
    def _show_history(self) -> None:
        entries = self.state.history
        self.history.options = [
            (f"{r['time']}  {r['endpoint']}  {r['status']}  {r['latency_ms'] or '-'} ms  {r['prompt']}", i)
            for i, r in reversed(list(enumerate(e.row() for e in entries)))
        ]

    def _restore(self) -> None:
        if self.history.value is None:
            return
        entry = self.state.history[self.history.value]
        self.prompt.value = entry.template or entry.prompt
        params = dict(entry.params)
        with self.state.hold_trait_notifications():
            self.state.endpoint = entry.endpoint
            self.state.handler = entry.handler
            self.state.temperature = params.pop("temperature", None)
            self.state.max_new_tokens = params.pop("max_new_tokens", None)
            self.state.top_p = params.pop("top_p", None)
            self.state.stop = params.pop("stop", None) or []
            self.state.model_kwargs = params
        self.tabs.selected_index = 3
