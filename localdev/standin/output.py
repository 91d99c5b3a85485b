"""What one run of the model server prints: its stdout/stderr lines.

The real binary writes TensorFlow log lines (absl format: severity letter,
date, time, thread id, ``file:line]``, message) and, from main.cc, plain
``std::cout`` lines (the usage text, ``unknown argument: ...``, ``Failed to
start server. Error: ...``). The kubelet turns the tail of these lines into
the termination message when a container with
``terminationMessagePolicy: FallbackToLogsOnError`` fails: at most the last
80 lines and at most the last 2048 bytes of them
(``MaxContainerTerminationMessageLogLines`` and
``MaxContainerTerminationMessageLogLength`` in the kubelet's
``pkg/kubelet/container/runtime.go``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)

TAIL_LINES = 80
TAIL_BYTES = 2048
# A run keeps more than the kubelet's tail, for logs and tests, but not forever.
KEPT_LINES = 2000


class ProcessOutput:
    """The lines one server run printed, oldest first (thread-safe)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lines: deque[str] = deque(maxlen=KEPT_LINES)
        self._lock = threading.Lock()

    def raw(self, text: str) -> None:
        """A ``std::cout`` write: each line as is."""
        with self._lock:
            self._lines.extend(text.splitlines() or [""])
        for line in text.splitlines():
            log.info("%s | %s", self.name, line)

    def log(self, severity: str, source: str, message: str) -> None:
        """A TensorFlow ``LOG(severity)`` line from ``source`` (``file.cc:line``)."""
        now = time.time()
        stamp = time.strftime("%m%d %H:%M:%S", time.gmtime(now))
        micros = int((now % 1) * 1_000_000)
        thread = threading.get_native_id() % 10_000_000
        self.raw(f"{severity[0]}{stamp}.{micros:06d} {thread:>7} {source}] {message}")

    def info(self, source: str, message: str) -> None:
        """``LOG(INFO)``."""
        self.log("I", source, message)

    def warning(self, source: str, message: str) -> None:
        """``LOG(WARNING)``."""
        self.log("W", source, message)

    def error(self, source: str, message: str) -> None:
        """``LOG(ERROR)``."""
        self.log("E", source, message)

    @property
    def lines(self) -> list[str]:
        """Every kept line, oldest first."""
        with self._lock:
            return list(self._lines)


def kubelet_tail(lines: list[str]) -> tuple[str, ...]:
    """The lines a kubelet would put in the termination message (its tail rules)."""
    text = "\n".join(lines[-TAIL_LINES:])
    data = text.encode()
    if len(data) > TAIL_BYTES:
        # The kubelet keeps the end; a line cut in the middle stays cut.
        text = data[-TAIL_BYTES:].decode(errors="replace")
    return tuple(text.split("\n")) if text else ()
