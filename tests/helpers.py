"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import time


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    """Poll ``condition()`` until it is true or ``timeout_s`` passed; flowgraphs run in other threads."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False
