"""The panel's parts: widget factories, and the parameter fields generated from the parameter table
(shown from the settings, read back with the table's own checks)."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

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
