"""One line describing the machine a benchmark ran on (CPU model from /proc/cpuinfo, cores)."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {usable} cores usable ({os.cpu_count()} online), Python {platform.python_version()}"
