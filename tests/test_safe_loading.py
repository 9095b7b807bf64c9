"""Weights and data load without running code: safetensors, ``torch.load(weights_only=True)``, no pickle.

The repository's Python sources are parsed (not grepped, so comments and strings do not count) and every
call that can unpickle is checked. The checker is itself tested on bad snippets, so this test can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("python", "scripts", "benchmarks", "fuzz", "examples")

# Modules whose load functions execute arbitrary code from the file.
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _keyword(call: ast.Call, name: str):
    """The constant value of keyword ``name`` (``...`` when absent, ``None`` when not a constant).

    ``**kwargs`` count as absent: a ``torch.load(**opts)`` is then flagged for lacking weights_only=True.
    """
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else None
    return ...


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Problems in one Python source: pickling imports and calls that may unpickle or run remote code."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLING_MODULES:
                    problems.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLING_MODULES:
            problems.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name.endswith("torch.load") and _keyword(node, "weights_only") is not True:
                problems.append(f"{where}: {name} without weights_only=True")
            elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (..., False):
                problems.append(f"{where}: {name} with allow_pickle")
            elif last in ("read_pickle", "from_pickle", "loads_pickle"):
                problems.append(f"{where}: {name}")
            elif last == "from_pretrained" and _keyword(node, "use_safetensors") is False:
                problems.append(f"{where}: from_pretrained(use_safetensors=False)")
            if _keyword(node, "trust_remote_code") not in (..., False):
                problems.append(f"{where}: {name or 'call'}(trust_remote_code=...) runs code from the hub")
    return problems


def python_sources() -> list[Path]:
    files = []
    for top in SCANNED:
        files += sorted((ROOT / top).rglob("*.py")) if (ROOT / top).is_dir() else []
    return [f for f in files if ".venv" not in f.parts and "egg-info" not in str(f)]


def test_repository_loads_nothing_unsafely():
    files = python_sources()
    assert len(files) > 20 and any(f.name == "learned.py" for f in files), "the scan must see the sources"
    problems = [p for f in files for p in unsafe_loads(f.read_text(), str(f.relative_to(ROOT)))]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "import joblib as jl",
    "from dill import load",
    "import torch\nstate = torch.load('w.pt')",
    "import torch\nstate = torch.load('w.pt', weights_only=False)",
    "import torch\nopts = {}\nstate = torch.load('w.pt', **opts)",
    "import numpy as np\na = np.load('x.npy', allow_pickle=True)",
    "import pandas as pd\ndf = pd.read_pickle('x.pkl')",
    "m = AutoModel.from_pretrained('x', use_safetensors=False)",
    "m = AutoModel.from_pretrained('x', trust_remote_code=True)",
])
def test_checker_flags_unsafe_loading(snippet):
    assert unsafe_loads(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "import torch\nstate = torch.load('w.pt', weights_only=True, map_location='cpu')",
    "import numpy as np\na = np.load('x.npz')",
    "import numpy as np\na = np.load('x.npz', allow_pickle=False)",
    "from safetensors.torch import load_file\nstate = load_file('w.safetensors')",
    "m = AutoModel.from_pretrained('x', use_safetensors=True)",
    "# torch.load('w.pt') in a comment is fine\ns = 'import pickle'",
])
def test_checker_accepts_safe_loading(snippet):
    assert unsafe_loads(snippet) == [], snippet
