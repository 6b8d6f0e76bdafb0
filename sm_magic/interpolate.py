"""``{var}`` in prompts, filled by looking names up: nothing is ever evaluated.

``{name}``, ``{row.text}``, ``{docs[0]}``, ``{x!r}`` and ``{n:>5}`` work; names starting with an
underscore (``__class__``, ``_private``) are refused, and so are positional fields (``{0}``, ``{}``).
"""

from __future__ import annotations

import _string  # the parser behind str.format's field names
import difflib
import string
from collections.abc import Mapping
from typing import Any

from sm_magic.errors import ConfigError

BRACES_HINT = "Write {{ and }} for literal braces, or use --no-interpolate."
CODE_CHARACTERS = "\"'\n:;,()=<>"  # in braces, these say JSON or code, not a misspelt name


class InterpolationError(ConfigError):
    """A ``{field}`` could not be filled."""


def field_names(template: str) -> list[str]:
    """Top-level names a template refers to, in order (nested specs included)."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise InterpolationError(f"The prompt's braces do not balance ({e}). {BRACES_HINT}") from None
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        first, _rest = _string.formatter_field_name_split(field) if field else ("", iter(()))
        if not isinstance(first, str) or not first:  # {} or {0}: named as written, not as str.format numbers it
            raise InterpolationError(f"{{{field}}}: positional fields are not allowed; use a name. {BRACES_HINT}")
        if first not in names:
            names.append(first)
        if spec:
            names += [n for n in field_names(spec) if n not in names]
    return names


def plain_fields(template: str) -> list[tuple[str, str | None]] | None:
    """The template as (literal text, field name or None) pairs when every field is a bare name
    (``{text}``, ``{question}``): a batch then fills it with one lookup per field instead of parsing it
    once per item. None for anything else (attributes, indexes, conversions, format specs, ``_`` names,
    unbalanced braces): :func:`interpolate` handles those, and says what is wrong."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return None
    pairs: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (not field.isidentifier() or field.startswith("_") or spec or conversion):
            return None
        pairs.append((literal, field))
    return pairs


def suggest(missing: list[str], namespace: Mapping[str, Any]) -> str:
    """A did-you-mean for each missing name close to a defined one (difflib), or an empty string."""
    defined = [n for n in namespace if isinstance(n, str) and not n.startswith("_")]
    pairs = []
    for name in missing:
        near = difflib.get_close_matches(name, defined, n=1, cutoff=0.75)
        if near:
            pairs.append(f"{{{near[0]}}}" + (f" for {{{name}}}" if len(missing) > 1 else ""))
    return f" Did you mean {', '.join(pairs)}?" if pairs else ""


class _LookupFormatter(string.Formatter):
    def __init__(self, namespace: Mapping[str, Any]):
        self.namespace = namespace

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        self._field = field_name
        first, rest = _string.formatter_field_name_split(field_name)
        if not isinstance(first, str) or not first:
            raise InterpolationError(f"{{{field_name}}}: positional fields are not allowed; use a name. {BRACES_HINT}")
        if first.startswith("_"):
            raise InterpolationError(f"{{{field_name}}}: names starting with '_' are not looked up.")
        value = self.namespace[first]
        for is_attribute, key in rest:
            if is_attribute:
                if key.startswith("_"):
                    raise InterpolationError(
                        f"{{{field_name}}}: attribute '{key}' is not looked up (no names starting with '_').")
                try:
                    value = getattr(value, key)
                except AttributeError:
                    kind = type(value).__name__
                    raise InterpolationError(f"{{{field_name}}}: {kind} has no attribute '{key}'.") from None
            else:
                try:
                    value = value[key]
                except (KeyError, IndexError, TypeError) as e:
                    raise InterpolationError(f"{{{field_name}}}: [{key!r}] failed ({type(e).__name__}: {e}).") from None
        return value, first

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion not in (None, "s", "r", "a"):
            raise InterpolationError(f"Unknown conversion !{conversion}.")
        try:
            return super().convert_field(value, conversion)
        except Exception as e:
            raise self._unshowable(e) from None

    def format_field(self, value: Any, format_spec: str) -> Any:
        try:
            return super().format_field(value, format_spec)
        except InterpolationError:
            raise
        except Exception as e:  # the variable's __str__ / __format__ raised
            raise self._unshowable(e) from None

    def _unshowable(self, error: Exception) -> InterpolationError:
        return InterpolationError(f"{{{getattr(self, '_field', '?')}}} could not be turned into text: "
                                  f"{type(error).__name__}: {error}. Pass a string, or fix the object's __str__.")


def interpolate(template: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{fields}`` from ``namespace``; unknown names are listed together in one error."""
    if "{" not in template and "}" not in template:  # nothing to fill (most prompts)
        return template
    missing = [n for n in field_names(template) if n not in namespace and not n.startswith("_")]
    odd = next((n for n in missing if any(c in n for c in CODE_CHARACTERS)), None)
    if odd is not None:  # braces of pasted JSON or code, not a name
        shown = " ".join(odd.split())[:40]
        raise InterpolationError(f"The braces in the prompt hold {shown!r}, which is not a name: if they are part "
                                 "of the text (JSON, code), write {{ and }} for them, or use --no-interpolate.")
    if missing:
        listed = ", ".join(f"{{{n}}}" for n in missing)
        raise InterpolationError(
            f"The prompt refers to {listed}, not defined in the notebook.{suggest(missing, namespace)} Define "
            f"{'it' if len(missing) == 1 else 'them'} first. {BRACES_HINT}"
        )
    try:
        return _LookupFormatter(namespace).vformat(template, (), {})
    except InterpolationError:
        raise
    except (ValueError, TypeError) as e:
        raise InterpolationError(f"The prompt could not be filled: {e}. {BRACES_HINT}") from None
