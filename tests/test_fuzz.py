"""The coverage-guided fuzz target (fuzz/fuzz_wire.py) survives a fixed, seeded run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz_counts import record

pytest_plugins = ["fuzz_counts"]

import atheris  # noqa: E402,F401  (installed by the set-up; its absence must fail, not skip)

FUZZ_SCRIPT = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_wire.py"
# 20 000 inputs outgrew the subprocess limit on slower CI machines (the early inputs decode whole frames);
# the longer run is `python fuzz/fuzz_wire.py -runs=20000 -seed=1` from fuzz/.
RUNS = 10_000


@pytest.mark.slow
def test_fuzz_wire_fixed_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(FUZZ_SCRIPT.parents[1] / "python")}
    # -seed fixes libFuzzer's mutations; a Python exception other than ValueError, a >10 s input or
    # running past 1.5 GB RSS makes libFuzzer exit non-zero with the offending input in its log.
    proc = subprocess.run([sys.executable, str(FUZZ_SCRIPT), f"-runs={RUNS}", "-seed=1", "-timeout=10",
                           "-rss_limit_mb=1536", f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=270, env=env, cwd=FUZZ_SCRIPT.parent)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    found = re.search(r"fuzz_wire: (\d+) inputs tried \((\d+) frames decoded", proc.stdout)
    assert found, tail
    tried, decoded = int(found.group(1)), int(found.group(2))
    record("atheris fuzz_wire inputs", tried)
    print(found.group(0))
    assert tried == RUNS
    assert decoded > 0, "the seeds must reach the decoder, else the run fuzzes nothing"
