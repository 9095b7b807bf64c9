"""tests/mutants/: every patch is listed, still applies to the tree, and names a test that exists.
(Whether each named test really fails with its patch: ``python tests/mutants/check_mutants.py``.)"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "tests" / "mutants"


def _listed() -> dict[str, str]:
    out = {}
    for line in (MUTANTS / "README.md").read_text().splitlines():
        name, sep, node = line.partition(".patch: ")
        if sep:
            out[name + ".patch"] = node.strip()
    return out


def test_every_patch_is_listed_once_with_a_test_that_exists():
    listed = _listed()
    assert sorted(listed) == sorted(p.name for p in MUTANTS.glob("*.patch"))
    for patch, node in listed.items():
        path, _, name = node.partition("::")
        function = name.split("[")[0]
        tree = ast.parse((ROOT / path).read_text())
        assert function in {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}, (patch, node)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs a git checkout (git apply --check against the source tree)")
@pytest.mark.parametrize("patch", sorted(_listed()))
def test_patch_applies_to_the_tree(patch):
    result = subprocess.run(["git", "apply", "--check", str(MUTANTS / patch)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
