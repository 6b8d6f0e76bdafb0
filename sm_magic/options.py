"""SageMaker's per-call invoke headers as one record, generated from the parameter table."""

from __future__ import annotations

from dataclasses import field, fields, make_dataclass
from typing import Any

from sm_magic.errors import ConfigError
from sm_magic.params import INVOKE_PARAMS

_BY_BOTO = {p.boto: p for p in INVOKE_PARAMS}
_BY_NAME = {p.name: p for p in INVOKE_PARAMS}


class _InvokeHeaders:
    """Methods of :data:`InvokeOptions` (its fields are the table's invoke parameters)."""

    @classmethod
    def from_boto(cls, kwargs: dict[str, Any]) -> Any:
        """From boto3 parameter names (LangChain's ``endpoint_kwargs``)."""
        unknown = set(kwargs) - set(_BY_BOTO)
        if unknown:
            raise ConfigError(f"Unknown invoke parameter(s): {', '.join(sorted(unknown))}. "
                              f"Known: {', '.join(sorted(_BY_BOTO))}.")
        return cls(**{_BY_BOTO[k].name: v for k, v in kwargs.items()})

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Any:
        """The invoke options among a dict of parameter values."""
        return cls(**{p.name: values[p.name] for p in INVOKE_PARAMS if values.get(p.name)})

    def merged(self, other: Any) -> Any:
        """These options, with ``other``'s set values taking precedence."""
        return type(self)(**{f.name: getattr(other, f.name) or getattr(self, f.name) for f in fields(self)})

    def set(self) -> dict[str, str]:
        """The options that have a value (in the table's order; most calls: none)."""
        return {name: value for name, value in vars(self).items() if value}

    def headers(self, stream: bool) -> dict[str, str]:
        return {_BY_NAME[name].header: str(value) for name, value in vars(self).items()
                if value and (_BY_NAME[name].streams or not stream)}

    def boto_kwargs(self, stream: bool) -> dict[str, str]:
        out = {}
        for name, value in vars(self).items():
            if not value:
                continue
            p = _BY_NAME[name]
            if stream and not p.streams:
                raise ConfigError(f"{p.option} cannot be used when streaming "
                                  "(InvokeEndpointWithResponseStream has no such parameter).")
            out[p.boto] = str(value)
        return out


InvokeOptions = make_dataclass(
    "InvokeOptions", [(p.name, str | None, field(default=None)) for p in INVOKE_PARAMS],
    bases=(_InvokeHeaders,), namespace={"__doc__": "SageMaker's per-call routing and metadata headers.",
                                        "__module__": __name__},
)
