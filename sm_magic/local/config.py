"""Which endpoints a local server offers: from CLI flags or a TOML/JSON file."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from sm_magic.local.containers import CONTAINERS
from sm_magic.local.faults import Fault

ASYNC_BUCKET = "sm-magic-local"


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
    max_concurrency: int = 0  # calls in flight the endpoint accepts (0: no limit); beyond: ThrottlingException
    max_rps: float = 0.0  # calls per second it accepts (0: no limit); beyond: ThrottlingException
    async_: bool = False  # an async inference endpoint (TOML/JSON key ``async``): InvokeEndpointAsync only
    s3_output_path: str = ""  # AsyncInferenceConfig.OutputConfig.S3OutputPath (default under s3://sm-magic-local)
    s3_failure_path: str = ""  # ...S3FailurePath

    @property
    def output_path(self) -> str:
        return (self.s3_output_path or f"s3://{ASYNC_BUCKET}/async-endpoint-outputs/{self.name}").rstrip("/")

    @property
    def failure_path(self) -> str:
        return (self.s3_failure_path or f"s3://{ASYNC_BUCKET}/async-endpoint-failures/{self.name}").rstrip("/")

    def __post_init__(self) -> None:
        if self.format not in CONTAINERS:
            raise ValueError(
                f"endpoint {self.name!r}: unknown format {self.format!r}; "
                f"choose one of: {', '.join(CONTAINERS)}"
            )
        if self.max_concurrency < 0 or self.max_rps < 0:
            raise ValueError(f"endpoint {self.name!r}: max_concurrency and max_rps must be 0 (no limit) or more")
        self.faults = [f if isinstance(f, Fault) else Fault(**f) for f in self.faults]

    @classmethod
    def parse(cls, text: str, backend: str = "auto") -> EndpointSpec:
        """``NAME=FORMAT[:OPTION...]`` as given to ``--endpoint``; options ``concurrency=N``, ``rps=R``, ``async``."""
        name, _, rest = text.partition("=")
        fmt, *options = (rest or "tgi").split(":")
        spec = cls(name=name.strip(), format=fmt.strip() or "tgi", backend=backend)
        for option in options:
            key, _, value = option.strip().partition("=")
            try:
                if key == "concurrency":
                    spec.max_concurrency = int(value)
                elif key == "rps":
                    spec.max_rps = float(value)
                elif key == "async" and not value:
                    spec.async_ = True
                else:
                    raise ValueError(f"unknown option {key!r}")
            except ValueError as e:
                raise ValueError(f"--endpoint {text!r}: {e}; options are concurrency=N, rps=R, async") from None
        spec.__post_init__()
        return spec


def _keys(table: dict) -> dict:
    """A config file's endpoint table as EndpointSpec arguments (``async`` is a Python keyword)."""
    return {("async_" if key == "async" else key): value for key, value in table.items()}


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
    s3_endpoint_url: str = ""  # S3-compatible service async endpoints read input from and write answers to
    async_workers: int = 4  # async requests processed at once (the rest wait in the queue)

    def __post_init__(self) -> None:
        self.endpoints = [e if isinstance(e, EndpointSpec) else EndpointSpec(**_keys(e)) for e in self.endpoints]
        if self.async_workers < 1:
            raise ValueError("async_workers must be 1 or more")

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
