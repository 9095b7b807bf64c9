"""Apply each tests/mutants/*.patch in a scratch copy of the tree and check that its named test fails.

    python tests/mutants/check_mutants.py [NAME ...]      # all patches listed in README.md by default

The copy holds python/, tests/ and gr-semcom/ (the bundled photos); the mutated package is put first
on PYTHONPATH, so the shared work tree is never modified. Exit status 1 if any mutant survives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COPIED = ("python", "tests", "gr-semcom")


def listed() -> dict[str, str]:
    """{patch file name: pytest node id} from README.md."""
    out = {}
    for line in (HERE / "README.md").read_text().splitlines():
        name, sep, node = line.partition(".patch: ")
        if sep:
            out[name + ".patch"] = node.strip()
    return out


def killed(patch: str, node: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="semcom-mutant-") as tmp:
        for part in COPIED:
            shutil.copytree(ROOT / part, Path(tmp) / part, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["git", "apply", str(HERE / patch)], cwd=tmp, check=True)
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "python"), "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", node],
                                cwd=tmp, env=env, capture_output=True, text=True)
        summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        # Exit 1 = tests ran and failed; 2/4/5 (interrupted, usage error, nothing collected) prove nothing.
        return result.returncode == 1, summary


def main(argv: list[str]) -> int:
    mutants = listed()
    names = [n if n.endswith(".patch") else n + ".patch" for n in argv] or list(mutants)
    survivors = []
    for name in names:
        ok, summary = killed(name, mutants[name])
        print(f"{'killed  ' if ok else 'SURVIVED'} {name}: {mutants[name]}  [{summary}]", flush=True)
        if not ok:
            survivors.append(name)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
