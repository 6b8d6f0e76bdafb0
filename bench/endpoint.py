"""The local endpoint the bench measures against, in its own process (``sm-magic serve``).

Client and endpoint share no interpreter, so the client's CPU is never hidden behind the server's
and the GIL is not shared. On a machine with two cores or more, the endpoint process is pinned to
the last core and this (client) process to the others (``os.sched_setaffinity``); subprocesses the
bench starts inherit the client's cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sm_magic.local import EndpointSpec

SERVE = [sys.executable, "-m", "sm_magic.cli", "serve"]


def cores() -> tuple[set[int], set[int]] | None:
    """(client cores, endpoint cores), or None where affinity cannot be set or there is one core."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None
    return set(available[:-1]), {available[-1]}


class RemoteEndpoint:
    """``sm-magic serve --config FILE --port 0`` in a child process; ``url``, ``calls``, ``stats()``, ``stop()``."""

    def __init__(self, specs: list[EndpointSpec], pin: bool = True):
        self._dir = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
        config = self._dir / "endpoints.json"
        config.write_text(json.dumps({"endpoints": [_spec(s) for s in specs]}))
        split = cores() if pin else None
        self.pinned = ""
        if split is not None:
            client, server = split
            self.pinned = f"endpoint process on core {sorted(server)}, client on {sorted(client)}"

        def place() -> None:  # in the child, before exec
            if split is not None:
                os.sched_setaffinity(0, split[1])

        self._log = (self._dir / "serve.log").open("w+")
        self.process = subprocess.Popen([*SERVE, "--config", str(config), "--port", "0"], stdout=subprocess.PIPE,
                                        stderr=self._log, text=True, preexec_fn=place)
        self.url = self._read_url()
        if split is not None:
            os.sched_setaffinity(0, split[0])

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("Local SageMaker endpoint at "):
                url = line.split(" at ", 1)[1].strip()
                self._wait_ready(url)
                return url
        self._log.seek(0)
        raise RuntimeError(f"sm-magic serve did not start: {self._log.read()[-2000:]}")

    @staticmethod
    def _wait_ready(url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_local/health", timeout=2) as r:
                    r.read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.loads(r.read())

    @property
    def calls(self) -> Counter[str]:
        """Runtime calls received so far, per endpoint (as ``LocalEndpoint.calls``)."""
        return Counter(self._get("/_local/calls"))

    def stats(self) -> dict[str, Any]:
        """``GET /_local/stats``: per endpoint calls, errors, calls in flight."""
        return self._get("/_local/stats")

    def cpu_seconds(self) -> float:
        """CPU time the endpoint process has used (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _spec(spec: EndpointSpec) -> dict[str, Any]:
    out = {k: v for k, v in asdict(spec).items() if v != getattr(EndpointSpec("x"), k) or k == "name"}
    if "async_" in out:
        out["async"] = out.pop("async_")
    return out
