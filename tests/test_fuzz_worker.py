"""The coverage-guided fuzz target of the worker protocol (fuzz/fuzz_worker.py) survives a fixed, seeded run."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz_counts import record

pytest_plugins = ["fuzz_counts"]

import atheris  # noqa: E402,F401  (installed by the set-up; its absence must fail, not skip)

FUZZ_SCRIPT = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_worker.py"
RUNS = 20_000
CPU_BUDGET_S = 60       # about 0.9 ms per input plus 6 s to start; wall time depends on what else runs


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzz_worker_fixed_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(FUZZ_SCRIPT.parents[1] / "python")}
    # Each input is one request to a live worker, followed by a ping; a missing or malformed reply, a
    # failed ping, a >30 s input or running past 1.5 GB RSS makes libFuzzer exit non-zero.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, str(FUZZ_SCRIPT), f"-runs={RUNS}", "-seed=1", "-timeout=30",
                           "-rss_limit_mb=1536", f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=FUZZ_SCRIPT.parent)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    reports = list(re.finditer(r"fuzz_worker: (\d+) inputs tried \((\d+) ok replies, (\d+) error replies, (\d+) pings",
                               proc.stdout))
    assert reports, tail
    found = reports[-1]            # the last report; one is also printed every 10 000 inputs
    tried, ok, errors, pings = (int(g) for g in found.groups())
    record("atheris fuzz_worker requests (each followed by a ping)", tried)
    print(found.group(0), f"CPU {cpu_s:.1f} s")
    assert cpu_s < CPU_BUDGET_S
    assert tried == RUNS and ok + errors == RUNS and pings == RUNS
    assert ok > 0, "some inputs must be served, else the run fuzzes only the rejections"
