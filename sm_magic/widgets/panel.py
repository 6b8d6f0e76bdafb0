"""``%sagemaker panel``: the magics' features as a form, on the same settings and runner.

Widgets are linked to the shell's :class:`~sm_magic.resolve.SageMaker` settings (endpoint, handler,
parameters, stream...), so what the panel sets a following ``%%sagemaker`` cell uses, and the reverse;
the parameter fields are generated from the parameter table. Callbacks read the form and call the
shared :class:`~sm_magic.runner.Runner` in a worker thread, so that Stop can end a stream. The
history list is redrawn at a bounded rate, never once per call. No AWS logic lives here.
"""

from __future__ import annotations

import html
import re
import threading
from typing import Any

import ipywidgets as w
from traitlets import link

from sm_magic.display import Pacer
from sm_magic.errors import ConfigError, SageMakerError
from sm_magic.history import printable
from sm_magic.interpolate import interpolate
from sm_magic.params import INVOKE, MODEL, QA
from sm_magic.resolve import CallSpec, local_url
from sm_magic.result import Result
from sm_magic.runner import Runner
from sm_magic.widgets import fields

HISTORY_REDRAW = 0.5  # seconds between history redraws, however many calls complete
QA_MODES = [("no documents", ""), ("auto", "auto"), ("stuff", "stuff"), ("map-reduce", "map-reduce"),
            ("refine", "refine"), ("retrieve", "retrieve")]


class Panel:
    """The form. ``widget`` is what a cell displays."""

    def __init__(self, runner: Runner, shell: Any = None):
        self.runner = runner
        self.state = runner.state
        self.shell = shell
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._links: list[Any] = []
        self._local = False
        self._secrets: dict[str, str] = {}  # typed keys, taken out of the widgets at once
        self._redraw: threading.Timer | None = None
        self._entries: list[Any] = []
        self._showing = False  # the panel is filling the fields from the settings: not a user's edit
        self._build()
        self._wire()

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        # Session
        self.profile = w.Dropdown(description="Profile", options=self._profiles(), style={"description_width": "9em"})
        self.profile.add_class("sm-profile")
        self.region = fields.text("Region", "sm-region", "us-east-1")
        self.role_arn = fields.text("Role ARN", "sm-role-arn", "arn:aws:iam::123456789012:role/name")
        self.external_id = fields.SecretField("External id", "sm-external-id", self._take_secret)
        self.endpoint_url = fields.text("Endpoint URL", "sm-endpoint-url", "(AWS)")
        self.local_button = fields.button("Local endpoint", "sm-local")
        self.access_key = fields.SecretField("Access key id", "sm-access-key", self._take_secret)
        self.secret_key = fields.SecretField("Secret key", "sm-secret-key", self._take_secret)
        self.session_token = fields.SecretField("Session token", "sm-session-token", self._take_secret)
        self.connect = fields.button("Connect", "sm-connect", "primary")
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
        self.refresh = fields.button("↻ Endpoints", "sm-refresh")
        self.endpoint_list = w.HTML()
        self.endpoint_list.add_class("sm-endpoint-list")
        self.alias = w.Dropdown(description="Alias", style={"description_width": "9em"})
        self.alias.add_class("sm-alias")
        self.handler = w.Combobox(description="Handler", ensure_option=False, continuous_update=False,
                                  style={"description_width": "9em"})
        self.handler.add_class("sm-handler")
        self.detected = w.HTML()
        self.detected.add_class("sm-detected")
        self._endpoint_box = w.VBox([w.HBox([self.endpoint, self.refresh]), self.endpoint_list, self.alias,
                                     w.HBox([self.handler, self.detected])])

        # Parameters (generated from the parameter table)
        self.fields = fields.param_fields((MODEL, INVOKE, QA))
        self.param_errors = w.HTML()
        self.param_errors.add_class("sm-param-errors")
        params_tab = w.VBox([f for n, f in self.fields.items() if fields.section_of(n) == MODEL]
                            + [self.param_errors])

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
        self.run = fields.button("Run", "sm-run", "success")
        self.stop = fields.button("Stop", "sm-stop", "danger")
        self.dry_run = fields.button("Dry run", "sm-dry-run")
        self.busy = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="8em",
                                                                                          visibility="hidden"))
        self.busy.add_class("sm-busy")
        qa_fields = [f for n, f in self.fields.items() if fields.section_of(n) == QA]
        prompt_tab = w.VBox([self.prompt, w.HBox([self.docs, self.upload]), self.qa_mode, *qa_fields,
                             w.HBox([self.run, self.stream, self.stop, self.dry_run, self.busy])])

        # History
        self.history = w.Select(rows=8, layout=w.Layout(width="100%"))
        self.history.add_class("sm-history")
        self.restore = fields.button("Restore prompt and settings", "sm-restore")
        history_tab = w.VBox([self.history, self.restore])

        endpoint_tab = w.VBox([*self._endpoint_box.children,
                               *(f for n, f in self.fields.items() if fields.section_of(n) == INVOKE)])
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
                       link((s, "stream"), (self.stream, "value"))]
        self._show_params()
        s.observe(lambda _: self._show_params(), names=list(self.fields))
        s.observe(lambda change: self._set_busy(change["new"]), names="busy")
        s.observe(lambda _: self._refresh_choices(), names="session")
        self.runner.listeners.append(self._history_changed)
        for field in self.fields.values():
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
        self.endpoint_url.value = local_url()
        self._local = True

    def _take_secret(self, field: Any, value: str) -> None:
        """A typed secret arrives as a message (never widget state) and is kept in memory until Connect."""
        name = {id(self.access_key): "access_key_id", id(self.secret_key): "secret_access_key",
                id(self.session_token): "session_token", id(self.external_id): "external_id"}[id(field)]
        self._secrets[name] = value

    def _connect(self) -> None:
        from sm_magic.commands.session import describe
        from sm_magic.resolve import connect
        from sm_magic.session import Session

        secrets, self._secrets = self._secrets, {}
        for field in (self.access_key, self.secret_key, self.session_token, self.external_id):
            field.placeholder = "optional"
        url = self.endpoint_url.value.strip() or None
        profile = self.profile.value if self.profile.value != "(default chain)" else None
        external_id = secrets.pop("external_id", None)
        try:
            session = connect(Session(), local=url if self._local and url else None, keys=secrets, profile=profile,
                              region=self.region.value.strip(), endpoint_url=url, role_arn=self.role_arn.value.strip(),
                              external_id=external_id)
            identity = session.identity()
        except SageMakerError as e:
            self.identity.value = f'<span style="color: #b00">{html.escape(e.explain())}</span>'
            return
        self.state.set_session(session)
        info = describe(session)
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
        """The settings in the fields. Filling them is not an edit: a field filled first is never read back
        with the others still showing the old settings (that wrote the old values over the new)."""
        self._showing = True
        try:
            fields.show(self.fields, self.state)
        finally:
            self._showing = False
        self.param_errors.value = ""  # the fields now show the settings, which are valid

    def _read_params(self) -> None:
        """Validate as typed (the table's own checks); write the settings only when every field is valid."""
        if self._showing:
            return
        values, errors = fields.read(self.fields)
        self.param_errors.value = "<br>".join(f'<span style="color: #b00">{html.escape(e)}</span>' for e in errors)
        if errors:
            return
        with self.state.hold_trait_notifications():
            for name, value in values.items():
                setattr(self.state, name, value if value is not None or self.state.traits()[name].allow_none
                        else self.state.traits()[name].default_value)

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
        self.state.aliases.new_cell()  # a run from the panel looks at the aliases file, as a cell does
        self._worker = threading.Thread(target=self._work, args=(dry_run,), daemon=True, name="sm-magic-panel")
        self._worker.start()

    def wait(self, timeout: float = 60) -> None:
        """Block until the running call ends (tests and scripts)."""
        if self._worker is not None:
            self._worker.join(timeout)
        if self._redraw is not None:  # show the history now rather than at the next paced redraw
            self._redraw.cancel()
            self._show_history()

    def _work(self, dry_run: bool) -> None:
        try:
            namespace = self.shell.user_ns if self.shell is not None else {}
            template = self.prompt.value
            values: dict[str, Any] = {"dry_run": dry_run}
            docs = self._documents()
            if docs is not None and self.qa_mode.value:
                values.update(docs=docs, mode=self.qa_mode.value)
            outcome = self.runner.run(CallSpec(interpolate(template, namespace), values, template), _Live(self))
            self.runner.last = outcome
            if isinstance(outcome, Result) and not outcome.dry_run:
                self._show(outcome)
            else:
                request = outcome.request if isinstance(outcome, Result) else outcome
                self.answer.value = fields.pre(request.describe() if request is not None else "")
                self.footer.value = "dry run: nothing sent"
        except SageMakerError as e:
            partial = getattr(e, "result", None)
            if partial is not None:
                self._show(partial)
            self.status.value = f'<span style="color: #b00">{type(e).__name__}: {html.escape(e.explain())}</span>'
        except Exception as e:  # never let a callback die silently
            self.status.value = f'<span style="color: #b00">{html.escape(f"{type(e).__name__}: {e}")}</span>'
        finally:
            self.state.busy = False

    def _show(self, result: Result) -> None:
        self.runner.last = result
        if self.state.handler == "auto":
            self.detected.value = f"auto → <b>{html.escape(result.handler)}</b>"
        self.answer.value = fields.pre(printable(result.text))
        footer = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(result.footer()))
        self.footer.value = f"<small>{footer}</small>"

    # -- history -------------------------------------------------------------------------------------------
    def _history_changed(self, entry: Any) -> None:
        """A call completed somewhere: redraw the list at most every HISTORY_REDRAW seconds."""
        if self._redraw is None:
            self._redraw = threading.Timer(HISTORY_REDRAW, self._show_history)
            self._redraw.daemon = True
            self._redraw.start()

    def _show_history(self) -> None:
        self._redraw = None
        try:
            self._entries = list(self.runner.history)
            self.history.options = [
                (printable(f"{r['time']}  {r['endpoint']}  {r['status']}  {r['latency_ms'] or '-'} ms  {r['prompt']}"),
                 i) for i, r in reversed(list(enumerate(e.row() for e in self._entries)))
            ]
        except Exception as e:  # a view's failure never reaches a call
            self.status.value = f'<span style="color: #b00">History: {html.escape(type(e).__name__)}</span>'

    def _restore(self) -> None:
        """The call's prompt and the settings it was made with, as chosen: an alias's name (its own settings
        stay the alias's), the handler as set (``auto`` stays auto)."""
        if self.history.value is None:
            return
        entry = self._entries[self.history.value]
        if entry.job is not None:
            self.status.value = (f'<span style="color: #b00">A {html.escape(entry.job)} cannot be restored here: '
                                 "run its cell again (with --resume, finished items are not called again).</span>")
            return
        name = entry.values.get("endpoint") or entry.endpoint  # the name the call was made with
        try:
            alias = self.state.aliases.get(name)
        except ConfigError:  # an alias broken since: its name is restored, its settings were not ours
            alias = None
        # the alias's own settings apply through the alias: they are not made the kernel's defaults
        values = {k: v for k, v in entry.values.items() if alias is None or alias.values.get(k) != v}
        self.prompt.value = printable(entry.prompt)
        with self.state.hold_trait_notifications():
            self.state.endpoint = name
            for setting in ("handler", "stream", *self.fields):
                trait = self.state.traits()[setting]
                value = values.get(setting)
                setattr(self.state, setting, value if value is not None or trait.allow_none
                        else trait.default_value)
        cut = entry.length - len(entry.prompt)
        self.status.value = "" if cut <= 0 else (
            f'<span style="color: #b00">⚠ Only the first {len(entry.prompt):,} characters of this prompt were '
            f"kept ({cut:,} more were sent): complete it before running it again.</span>")
        self.tabs.selected_index = 3


class _Live:
    """The answer box as a stream's live view (paced redraws; Stop ends the stream)."""

    def __init__(self, panel: Panel):
        self.panel = panel
        self.pacer = Pacer()
        self.chunks: list[str] = []
        self.length = 0

    def add(self, chunk: str) -> None:
        self.chunks.append(chunk)
        self.length += len(chunk)
        if self.pacer.due(self.length):  # the join is O(text), so only when due
            self.panel.answer.value = fields.pre(printable("".join(self.chunks)) + " ▌")

    def stopped(self) -> bool:
        return self.panel._stop.is_set()

