"""The panel's parts: widget factories, and the parameter fields generated from the parameter table
(shown from the settings, read back with the table's own checks)."""

from __future__ import annotations

import html
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from sm_magic.errors import ConfigError
from sm_magic.params import CONFIG_PARAMS

BY_NAME = {p.name: p for p in CONFIG_PARAMS}
LABELS = {"max_new_tokens": "Max new tokens", "top_p": "Top-p", "stop": "Stop (1/line)", "model_kwargs": "Extra JSON",
          "custom_attributes": "Custom attrs", "inference_component": "Inference comp."}


def text(description: str, css: str, placeholder: str = "", password: bool = False) -> w.Text:
    cls = w.Password if password else w.Text
    field = cls(description=description, placeholder=placeholder, continuous_update=False,
                style={"description_width": "9em"}, layout=w.Layout(width="32em"))
    field.add_class(css)
    return field


def button(label: str, css: str, style: str = "") -> w.Button:
    made = w.Button(description=label, button_style=style)
    made.add_class(css)
    return made


def pre(content: str) -> str:
    return f'<pre style="white-space: pre-wrap; margin: 0">{html.escape(content)}</pre>'


def param_fields(sections: tuple[str, ...]) -> dict[str, w.Widget]:
    """One field per configurable parameter of these sections (class ``sm-<name>``)."""
    fields: dict[str, w.Widget] = {}
    for param in CONFIG_PARAMS:
        if param.section not in sections:
            continue
        label, css = LABELS.get(param.name, param.name.replace("_", " ").capitalize()), "sm-" + param.name.replace(
            "_", "-")
        if param.type in ("list", "json"):
            field = w.Textarea(description=label, continuous_update=False, placeholder=param.help,
                               style={"description_width": "9em"}, layout=w.Layout(width="32em"))
            field.add_class(css)
        else:
            field = text(label, css, "container default")
        field.description_tooltip = param.help
        fields[param.name] = field
    return fields


def show(fields: dict[str, w.Widget], settings: Any) -> None:
    """The settings' values in the fields."""
    for name, field in fields.items():
        value = getattr(settings, name)
        field.value = "\n".join(value or []) if name == "stop" else BY_NAME[name].format(value)


def read(fields: dict[str, w.Widget]) -> tuple[dict[str, Any], list[str]]:
    """The fields' values, checked by the table (empty → the default), and the problems found."""
    values, errors = {}, []
    for name, field in fields.items():
        param, typed = BY_NAME[name], field.value
        try:
            if name == "stop":
                values[name] = [line for line in typed.splitlines() if line]
            else:
                values[name] = param.parse(typed) if typed.strip() else param.default
        except ConfigError as e:
            errors.append(f"{field.description}: {e.message}")
    return values, errors


def section_of(name: str) -> str:
    return BY_NAME[name].section


class SecretField(anywidget.AnyWidget):
    """A password box whose text never becomes widget state: on Enter, or when the box loses focus, the
    browser sends it to the kernel as a message and empties the box. Messages are never saved with a
    notebook, so no save (Ctrl+S, autosave, the toolbar while the kernel is busy) can hold the secret."""

    _esm = """
    function render({ model, el }) {
      const label = document.createElement("label");
      label.style.cssText = "display: inline-block; width: 9em; flex: none; text-align: right; margin-right: 8px; "
        + "font-size: var(--jp-widgets-font-size); color: var(--jp-widgets-label-color)";
      const input = document.createElement("input");
      input.type = "password";
      input.autocomplete = "off";
      input.className = "widget-input";
      input.style.cssText = "flex: 1; min-width: 0; height: var(--jp-widgets-inline-height)";
      const show = () => {
        label.textContent = model.get("description");
        input.placeholder = model.get("placeholder");
      };
      const send = () => { if (input.value) { model.send({ secret: input.value }); input.value = ""; } };
      input.addEventListener("change", send);
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
      model.on("change:placeholder", show);
      show();
      const row = document.createElement("div");
      row.style.cssText = "display: flex; align-items: center; width: 32em; margin: 2px 0";
      row.append(label, input);
      el.append(row);
    }
    export default { render };
    """
    description = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("optional").tag(sync=True)

    def __init__(self, description: str, css: str, on_secret: Any):
        super().__init__(description=description)
        self.add_class(css)
        self._on_secret = on_secret
        self.on_msg(lambda _widget, content, _buffers: self.set(content.get("secret", ""))
                    if isinstance(content, dict) else None)

    def set(self, secret: str) -> None:
        """What the browser does on Enter (scripts and tests call it directly)."""
        if secret:
            self._on_secret(self, secret)
            self.placeholder = "secret set ✓"
