"""What a call returns: the answer with its provenance, rendered richly in notebooks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

FORMATS = ("markdown", "text", "json")
SOURCES_SHOWN = 10  # sources listed in a terminal; .sources has them all
SOURCE_WORDS = 80  # characters of each source shown
BODY_SHOWN = 20_000  # characters of a request body a dry run shows


@dataclass(slots=True)
class Request:
    """The exact request: what a dry run shows and what a Result remembers."""

    endpoint: str
    body: bytes
    content_type: str
    accept: str
    headers: dict[str, str] = field(default_factory=dict)  # SageMaker's invoke headers
    stream: bool = False
    invoke_params: dict[str, str] = field(default_factory=dict)  # the same, as boto3 parameters

    @property
    def path(self) -> str:
        op = "invocations-response-stream" if self.stream else "invocations"
        return f"POST /endpoints/{self.endpoint}/{op}"

    def body_text(self, limit: int | None = BODY_SHOWN) -> str:
        """The body as text (JSON indented); past ``limit`` characters it is cut and says how much."""
        try:
            text = json.dumps(json.loads(self.body), indent=2, ensure_ascii=False)
        except (ValueError, UnicodeDecodeError):
            text = self.body.decode("utf-8", "replace")
        if limit is None or len(text) <= limit:
            return text
        return (f"{text[:limit]}\n… {len(text) - limit:,} more characters not shown "
                f"(the body is {len(self.body):,} bytes; .body has it all)")

    def describe(self) -> str:
        accept = "X-Amzn-SageMaker-Accept" if self.stream else "Accept"
        lines = [self.path, f"Content-Type: {self.content_type}", f"{accept}: {self.accept}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return "\n".join(lines) + "\n\n" + self.body_text()


@dataclass(slots=True)  # a batch holds one per item: no per-instance dict
class Result:
    """An answer. ``str(result)`` is the text; notebooks render Markdown with a footer, terminals the text
    with a footer line (and a QA answer's sources)."""

    text: str
    endpoint: str
    handler: str
    latency: float = 0.0  # seconds, request sent → last byte
    variant: str | None = None
    usage: dict[str, int] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    request: Request | None = None
    body: bytes | None = None
    content_type: str | None = None
    data: Any = None
    sources: Sequence[dict[str, Any]] = ()  # a QA answer's chunks (a list); () costs a batch item nothing
    streamed: bool = False
    interrupted: bool = False
    dry_run: bool = False
    truncated: bool = False  # a stream that ended without its container's end marker
    partial: bool = False  # built from fewer answers than planned (QA with failed chunks)
    first_token: float | None = None
    response_attributes: str | None = None
    new_session_id: str | None = None
    format: str = "markdown"

    def __str__(self) -> str:
        return self.text

    @property
    def status(self) -> str:
        """ok, interrupted, truncated, partial or dry run: what history and the footer say."""
        if self.dry_run:
            return "dry run"
        if self.interrupted:
            return "interrupted"
        if self.truncated:
            return "truncated"
        return "partial" if self.partial else "ok"

    @property
    def tokens(self) -> int | None:
        return (self.usage or {}).get("completion_tokens")

    def provenance(self) -> dict[str, Any]:
        """Endpoint, handler, parameters and timing: never credentials."""
        info: dict[str, Any] = {"endpoint": self.endpoint, "handler": self.handler,
                                "parameters": self.params, "latency_s": round(self.latency, 4)}
        if self.variant:
            info["variant"] = self.variant
        if self.usage:
            info["usage"] = self.usage
        if self.sources:
            info["sources"] = [s.get("source") for s in self.sources]
        if self.dry_run:
            info["dry_run"] = True
        return info

    def footer(self) -> str:
        """One line for notebooks (Markdown): endpoint, handler, latency, tokens, warnings, sources."""
        parts = [f"endpoint `{self.endpoint}`", f"handler `{self.handler}`"]
        if self.dry_run:
            parts.append("dry run: nothing sent")
        else:
            parts.append(f"{self.latency * 1000:.0f} ms")
        if self.tokens is not None:
            parts.append(f"{self.tokens} tokens")
        if self.status not in ("ok", "dry run"):
            parts.append(f"⚠ {self.status}")
        if self.sources:
            names = sorted({str(s.get("source")) for s in self.sources})
            shown = ", ".join(names[:5]) + (f" +{len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"sources: {shown}")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("body", "request", "format")}
        out["request"] = self.request.describe() if self.request else None
        return out

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        if self.format == "json":
            data: dict[str, Any] = {"application/json": self.to_dict()}
        elif self.format == "text":
            data = {}
        else:
            body = f"```\n{self.request.describe()}\n```" if self.dry_run and self.request else self.text
            data = {"text/markdown": f"{body}\n\n<sub>{self.footer()}</sub>"}
        data["text/plain"] = self.plain()
        return data, {"sm_magic": self.provenance()}

    def footer_line(self) -> str:
        """The footer as plain text on one line: ``[endpoint · handler · latency · tokens · status]``."""
        parts = [self.endpoint, self.handler, "nothing sent" if self.dry_run else f"{self.latency * 1000:.0f} ms"]
        if self.tokens is not None:
            parts.append(f"{self.tokens} tokens")
        parts.append(self.status)
        if self.sources:
            count = len({str(s.get("source")) for s in self.sources})
            parts.append(f"{count} source{'s' if count != 1 else ''}")
        return "[" + " · ".join(parts) + "]"

    def sources_text(self, limit: int = SOURCES_SHOWN) -> str:
        """The chunks a QA answer was built from, one numbered line each (their first words)."""
        lines = []
        for i, source in enumerate(self.sources[:limit], 1):
            chunk = f" (chunk {source['chunk']})" if source.get("chunk") is not None else ""
            words = " ".join(str(source.get("text") or "").split())
            words = words if len(words) <= SOURCE_WORDS else words[:SOURCE_WORDS - 1] + "…"
            lines.append(f"  {i}. {source.get('source')}{chunk}" + (f": {words}" if words else ""))
        if len(self.sources) > limit:
            lines.append(f"  ... {len(self.sources) - limit} more (all: .sources)")
        return "Sources:\n" + "\n".join(lines) if lines else ""

    def plain(self) -> str:
        """What a terminal shows: the answer (or the request, for a dry run), the sources, the footer line."""
        body = self.request.describe() if self.dry_run and self.request else self.text
        sources = self.sources_text()
        return "\n".join(part for part in (body, sources, self.footer_line()) if part)

    def __repr__(self) -> str:
        return self.plain()
