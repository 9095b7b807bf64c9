"""The GRC face of the module: block YAML agrees with the Python blocks, and the example flowgraph
compiles with grcc, matches its checked-in Python and runs."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pmt
import pytest
import yaml
from gnuradio import gr

REPO = Path(__file__).resolve().parents[1]
GRC_DIR = REPO / "grc"
EXAMPLE_GRC = REPO / "examples" / "loopback.grc"
EXAMPLE_PY = REPO / "examples" / "loopback.py"
EXAMPLES = sorted((REPO / "examples").glob("*.grc"))
BLOCK_FILES = sorted(GRC_DIR.glob("*.block.yml"))
REQUIRED_KEYS = {"id", "label", "category", "parameters", "templates", "documentation", "file_format"}
RUN_TIMEOUT_S = 45.0


def load_block(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def make_callable(block: dict):
    """The class the block's make template instantiates, resolved through its own imports."""
    namespace: dict = {}
    exec(block["templates"]["imports"], namespace)
    return eval(block["templates"]["make"].split("(", 1)[0].strip(), namespace)


def ports(block: dict, direction: str, domain: str) -> list[dict]:
    return [p for p in block.get(direction, []) if p["domain"] == domain]


def test_block_files_exist():
    assert {p.name for p in BLOCK_FILES} >= {"semcom_semantic_tx.block.yml", "semcom_semantic_rx.block.yml"}


@pytest.mark.parametrize("path", BLOCK_FILES, ids=lambda p: p.name)
def test_block_yaml_shape(path):
    block = load_block(path)
    assert REQUIRED_KEYS <= block.keys(), f"missing {REQUIRED_KEYS - block.keys()}"
    assert block["id"] == path.name.removesuffix(".block.yml")
    assert block["category"] == "[semcom]"
    assert block["file_format"] == 1
    assert {"imports", "make"} <= block["templates"].keys()
    for param in block["parameters"]:
        assert {"id", "label", "dtype"} <= param.keys(), param
    for port in block.get("inputs", []) + block.get("outputs", []):
        assert port["domain"] in ("message", "stream"), port
        assert "id" in port if port["domain"] == "message" else "dtype" in port, port


@pytest.mark.parametrize("path", BLOCK_FILES, ids=lambda p: p.name)
def test_block_yaml_matches_python(path):
    block = load_block(path)
    cls = make_callable(block)
    signature = inspect.signature(cls.__init__)
    param_ids = [p["id"] for p in block["parameters"]]
    assert set(param_ids) <= signature.parameters.keys(), f"{cls.__name__}{signature}"
    # every ${name} in make is a declared parameter, and every parameter reaches the constructor
    used = set(re.findall(r"\$\{\s*(\w+)\s*\}", block["templates"]["make"]))
    assert used == set(param_ids)

    instance = cls()    # every parameter has a default, so GRC's defaults build a block
    if isinstance(instance, gr.hier_block2):     # hier blocks do not list their message ports
        for port in ports(block, "inputs", "message"):
            assert instance.message_port_is_hier_in(pmt.intern(port["id"])), port
        for port in ports(block, "outputs", "message"):
            assert instance.message_port_is_hier_out(pmt.intern(port["id"])), port
    else:
        assert [p["id"] for p in ports(block, "inputs", "message")] == \
            [p for p in pmt.to_python(instance.message_ports_in()) if p != "system"]
        assert sorted(p["id"] for p in ports(block, "outputs", "message")) == \
            sorted(pmt.to_python(instance.message_ports_out()))
    assert len(ports(block, "inputs", "stream")) == instance.input_signature().max_streams()
    assert len(ports(block, "outputs", "stream")) == instance.output_signature().max_streams()


def with_path(first: Path, variable: str) -> str:
    return os.pathsep.join(filter(None, [str(first), os.environ.get(variable)]))


def grcc(grc: Path, out_dir: Path) -> Path:
    """Compile with grcc under this interpreter: GRC evaluates the flowgraph's imports in its own
    process, and Debian's python3 lacks our pip dependencies."""
    grcc_path = shutil.which("grcc")
    assert grcc_path, "grcc not on PATH (Debian package gnuradio)"
    env = {**os.environ, "GRC_BLOCKS_PATH": with_path(GRC_DIR, "GRC_BLOCKS_PATH"),
           "PYTHONPATH": with_path(REPO / "python", "PYTHONPATH"), "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run([sys.executable, grcc_path, str(grc), "-o", str(out_dir)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return out_dir / f"{grc.stem}.py"


def without_header(source: str) -> str:
    """Drop the generated comment block at the top (version, shebang), which says nothing about the graph."""
    lines = source.splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def test_every_example_has_its_compiled_script():
    assert {p.stem for p in EXAMPLES} >= {"loopback", "ota_tx_file", "ota_rx_file", "ota_tx_usrp", "ota_rx_usrp",
                                          "ota_tx_hackrf", "ota_rx_hackrf", "zmq_tx", "zmq_rx"}
    for grc in EXAMPLES:
        assert grc.with_suffix(".py").exists(), f"{grc.name} has no checked-in grcc output"


@pytest.mark.parametrize("grc", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles_and_matches_checked_in(grc, tmp_path):
    """Every flowgraph compiles headless (QT ones too: QT_QPA_PLATFORM=offscreen) and its checked-in
    script is grcc's output."""
    if "osmosdr_" in grc.read_text():
        assert importlib.util.find_spec("osmosdr"), "gr-osmosdr not installed (Debian package gr-osmosdr)"
    generated = grcc(grc, tmp_path)
    checked_in = grc.with_suffix(".py")
    assert without_header(generated.read_text()) == without_header(checked_in.read_text()), (
        f"examples/{checked_in.name} is stale: regenerate with GRC_BLOCKS_PATH=grc PYTHONPATH=python "
        f"QT_QPA_PLATFORM=offscreen .venv/bin/python $(which grcc) examples/{grc.name} -o examples")


@pytest.mark.slow
def test_example_runs_and_writes_image(tmp_path):
    spec = importlib.util.spec_from_file_location("semcom_example_loopback", EXAMPLE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "rx.png"
    tb = module.loopback(output_path=str(output))
    started = time.monotonic()
    tb.start()
    try:
        while not output.exists() and time.monotonic() - started < RUN_TIMEOUT_S:
            time.sleep(0.1)
    finally:
        tb.stop()
        tb.wait()
    assert output.exists(), f"no image after {RUN_TIMEOUT_S} s; rx stats {tb.semcom_semantic_rx_0.stats}"
    assert output.read_bytes().startswith(b"\x89PNG")
