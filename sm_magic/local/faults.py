"""Scripted faults for an endpoint: each fault applies to the next ``times`` calls."""

from __future__ import annotations

import json
import math
import threading
import urllib.request
from dataclasses import asdict, dataclass

KINDS = {
    "throttle": "429 ThrottlingException",
    "not-ready": "429 ModelNotReadyException",
    "internal": "500 InternalFailure",
    "unavailable": "503 ServiceUnavailable",
    "dependency": "530 InternalDependencyException",
    "model-error": "424 ModelError with the container's status and message",
    "latency": "answer after `seconds` (longer than the client's read timeout = read timeout)",
    "reset": "close the connection without answering",
    "malformed": "a body the container format does not produce",
    "stream-error": "ModelStreamError after `after_parts` parts",
    "stream-failure": "InternalStreamFailure after `after_parts` parts",
    "drop": "drop the connection after `after_parts` parts (or half the body)",
    "corrupt": "a frame with a bad CRC after `after_parts` parts",
    "lmi-error": "LMI's in-band finish_reason=error line after `after_parts` parts",
    "expired-token": "400 ExpiredTokenException, as for expired static credentials",
}


@dataclass
class Fault:
    """One scripted failure. ``times=-1`` applies it to every call until cleared."""

    kind: str
    times: int = 1
    after_parts: int = 1
    status: int = 500
    message: str = "Injected failure"
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if type(self.times) is not int or (self.times < 1 and self.times != -1):
            raise ValueError(f"times={self.times!r}: a fault applies to the next 1 or more calls, or -1 for every call")
        for name, low, high in (("after_parts", 0, None), ("status", 100, 599)):
            value = getattr(self, name)
            if type(value) is not int or value < low or (high is not None and value > high):
                raise ValueError(f"{name}={value!r}: a whole number from {low}" + (f" to {high}" if high else ""))
        if type(self.seconds) not in (int, float) or not 0 <= self.seconds < math.inf:
            raise ValueError(f"seconds={self.seconds!r}: a number of seconds, 0 or more")
        if not isinstance(self.message, str):
            raise ValueError(f"message={self.message!r}: text")


class FaultPlan:
    """The faults waiting for one endpoint, consumed in order, thread-safe."""

    def __init__(self, faults: list[Fault] | None = None):
        self._lock = threading.Lock()
        self._faults: list[Fault] = [Fault(**asdict(f)) for f in faults or []]

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(Fault(**asdict(f)) for f in faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self) -> Fault | None:
        """The fault for this call, if any."""
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.pop(0)
            return fault


def inject_remote(url: str, endpoint: str, *faults: Fault) -> None:
    """Script faults on a local endpoint running in another process (``sm-magic serve``)."""
    body = json.dumps({"endpoint": endpoint, "faults": [asdict(f) for f in faults]}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/_local/faults", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
