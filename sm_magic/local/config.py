"""Which endpoints a local server offers: from CLI flags or a TOML/JSON file."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from sm_magic.local.containers import CONTAINERS
from sm_magic.local.faults import Fault


@dataclass
class EndpointSpec:
    """One endpoint: its container format, backend, variants and scripted behaviour."""

    name: str
    format: str = "tgi"
    backend: str = "auto"
    variants: list[str] = field(default_factory=lambda: ["AllTraffic"])
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    inference_components: list[str] = field(default_factory=list)
    latency: float = 0.0
    token_delay: float = 0.0
    fill_to_max_tokens: bool = False
    part_size: int = 0
    status: str = "InService"
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.format not in CONTAINERS:
            raise ValueError(
                f"endpoint {self.name!r}: unknown format {self.format!r}; "
                f"choose one of: {', '.join(CONTAINERS)}"
            )
        self.faults = [f if isinstance(f, Fault) else Fault(**f) for f in self.faults]

    @classmethod
    def parse(cls, text: str, backend: str = "auto") -> EndpointSpec:
        """``NAME=FORMAT`` as given to ``--endpoint``."""
        name, _, fmt = text.partition("=")
        return cls(name=name.strip(), format=(fmt or "tgi").strip(), backend=backend)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    account: str = "000000000000"
    endpoints: list[EndpointSpec] = field(default_factory=list)
    # access key id → secret: when set, every request's SigV4 signature is verified.
    credentials: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = 6 * 1024 * 1024
    strict_region: bool = False  # True: calls signed for another region find no endpoint, as on AWS

    def __post_init__(self) -> None:
        self.endpoints = [e if isinstance(e, EndpointSpec) else EndpointSpec(**e) for e in self.endpoints]

    @classmethod
    def load(cls, path: str | Path) -> ServerConfig:
        """Read a TOML or JSON file with the fields above and ``[[endpoints]]`` tables."""
        path = Path(path)
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)
