"""The GRC face of the module as a user meets it: block YAML agrees with the Python blocks and explains
every parameter; every example opens in GRC with no error under ``semcom grc`` (checked headless the way
the GUI evaluates it, and on screen under Xvfb); the examples compile with grcc, match their checked-in
Python and run; the QT GUI loopback shows received images."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pmt
import pytest
import yaml
from gnuradio import gr
from grc_screenshot import qt_application, run_qt_flowgraph
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
GRC_DIR = REPO / "grc"
EXAMPLE_GRC = REPO / "examples" / "loopback.grc"
EXAMPLE_PY = REPO / "examples" / "loopback.py"
EXAMPLES = sorted((REPO / "examples").glob("*.grc"))
BLOCK_FILES = sorted(GRC_DIR.glob("*.block.yml"))
REQUIRED_KEYS = {"id", "label", "category", "parameters", "templates", "documentation", "file_format"}
RUN_TIMEOUT_S = 45.0
GUI_EXAMPLE_PY = REPO / "examples" / "loopback_gui.py"
# Template names GRC provides to a block's make (not parameters): its id, and the mako prelude's window name.
GRC_TEMPLATE_NAMES = {"id", "win"}


def load_block(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def make_call(block: dict) -> str:
    """The make template without the mako prelude (``<% ... %>\\``) that QT GUI blocks open with."""
    make = block["templates"]["make"]
    if make.lstrip().startswith("<%"):
        make = make.split("%>", 1)[1].lstrip("\\\n ")
    return make


def make_callable(block: dict):
    """The class the block's make template instantiates, resolved through its own imports."""
    namespace: dict = {}
    exec(block["templates"]["imports"], namespace)
    return eval(make_call(block).split("(", 1)[0].strip(), namespace)


@pytest.fixture(scope="module")
def qt_app():
    """QT GUI blocks need a QApplication, as in a generated QT GUI flowgraph (offscreen: no display)."""
    return qt_application()


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
def test_block_yaml_matches_python(path, qt_app):
    block = load_block(path)
    cls = make_callable(block)
    signature = inspect.signature(cls.__init__)
    # gui_hint places the widget; mcs only picks modulation and fec_code in GRC
    param_ids = [p["id"] for p in block["parameters"] if p["dtype"] != "gui_hint"]
    assert set(param_ids) - {"mcs"} <= signature.parameters.keys(), f"{cls.__name__}{signature}"
    # every ${name} in make is a declared parameter, and every parameter reaches the constructor
    make = block["templates"]["make"]
    used = set(re.findall(r"\$\{\s*(\w+)(?:\.\w+)?\s*\}", make)) - GRC_TEMPLATE_NAMES   # ${mcs.name}: an enum's attribute
    for expression in re.findall(r"\$\{([^}]*\bif\b[^}]*)\}", make):       # ${ a if mcs == 'custom' else mcs.a }
        used |= set(re.findall(r"\b[a-z_]\w*\b", re.sub(r"'[^']*'", "", expression))) & set(param_ids)
    assert used == set(param_ids)

    instance = cls()    # every parameter has a default, so GRC's defaults build a block
    if isinstance(instance, gr.hier_block2):     # hier blocks do not list their message ports
        for port in ports(block, "inputs", "message"):
            assert instance.message_port_is_hier_in(pmt.intern(port["id"])), port
        for port in ports(block, "outputs", "message"):
            assert instance.message_port_is_hier_out(pmt.intern(port["id"])), port
    else:
        assert sorted(p["id"] for p in ports(block, "inputs", "message")) == \
            sorted(p for p in pmt.to_python(instance.message_ports_in()) if p != "system")
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
    """Drop the generated comment block at the top (version, shebang), which says nothing about the graph,
    and sort the connect lines: grcc orders connections by block names only, so two connections between
    the same two blocks (the image sink's image and pdus) come out in either order from run to run."""
    lines = source.splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    connects = sorted(ln for ln in lines if ln.strip().startswith(("self.connect(", "self.msg_connect(")))
    others = [ln for ln in lines if not ln.strip().startswith(("self.connect(", "self.msg_connect("))]
    return "\n".join(others + connects)


def test_every_example_has_its_compiled_script():
    assert {p.stem for p in EXAMPLES} >= {"loopback", "ota_tx_file", "ota_rx_file", "ota_tx_usrp", "ota_rx_usrp",
                                          "ota_tx_hackrf", "ota_rx_hackrf", "zmq_tx", "zmq_rx", "hybrid_loopback"}
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
@pytest.mark.parametrize("name", ["loopback", "hybrid_loopback"])
def test_example_runs_and_writes_image(tmp_path, name):
    spec = importlib.util.spec_from_file_location(f"semcom_example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "rx.png"
    tb = getattr(module, name)(output_path=str(output))
    started = time.monotonic()
    tb.start()
    try:
        while not output.exists() and time.monotonic() - started < RUN_TIMEOUT_S:
            time.sleep(0.1)
    finally:
        tb.stop()
        tb.wait()
    rx = getattr(tb, "semcom_semantic_rx_0", None) or tb.semcom_hybrid_rx_0
    assert output.exists(), f"no image after {RUN_TIMEOUT_S} s; rx {getattr(rx, 'stats', None) or rx.counts}"
    assert output.read_bytes().startswith(b"\x89PNG")


# --- what GRC shows: parameters explained, options from the PHY, examples that open with no error ----
def test_phy_dropdowns_list_what_the_phy_offers():
    """The modulation and FEC dropdowns are packet.py's own sets (a new MCS code must reach GRC too)."""
    from semcom.radio.packet import FEC_CODES, MODULATIONS

    expected = {"modulation": MODULATIONS, "fec_code": FEC_CODES}
    checked = 0
    for path in BLOCK_FILES:
        for param in load_block(path)["parameters"]:
            if param["id"] in expected:
                assert param["options"] == [f'"{v}"' for v in expected[param["id"]]], f"{path.name}: {param['id']}"
                assert len(param["option_labels"]) == len(param["options"]), f"{path.name}: {param['id']}"
                checked += 1
    assert checked == 6         # packet_tx, packet_rx, semantic_receiver


def test_mcs_dropdowns_are_the_mcs_table():
    """Each MCS entry sets the modulation and FEC of semcom.radio.mcs's row of that name."""
    from semcom.radio.mcs import MCS_TABLE

    checked = 0
    for path in BLOCK_FILES:
        for param in load_block(path)["parameters"]:
            if param["id"] == "mcs":
                rows = list(zip(param["options"], param["option_attributes"]["modulation"],
                                param["option_attributes"]["fec_code"]))
                assert rows[0] == ("custom", "", ""), path.name
                assert rows[1:] == [(m.name, f'"{m.modulation}"', f'"{m.fec_code}"') for m in MCS_TABLE], path.name
                checked += 1
    assert checked == 3


@pytest.mark.parametrize("path", BLOCK_FILES, ids=lambda p: p.name)
def test_documentation_explains_every_parameter(path):
    block = load_block(path)
    doc = block["documentation"]
    for param in block["parameters"]:
        assert re.search(rf"^\s*{re.escape(param['label'])}( \(.*\))?:", doc, re.MULTILINE), \
            f"{path.name}: documentation has no line '{param['label']}: ...'"
    assert "docs/grc.md" in doc, f"{path.name}: documentation does not link the docs page"
    if any(p["id"] == "fec_code" for p in block["parameters"]):
        from semcom.radio.mcs import MCS_NAMES
        assert all(name in doc for name in MCS_NAMES), f"{path.name}: not every MCS row is explained"


@pytest.mark.parametrize("grc", EXAMPLES, ids=lambda p: p.name)
def test_example_describes_itself(grc):
    options = yaml.safe_load(grc.read_text())["options"]["parameters"]
    assert len(options["description"]) > 30, f"{grc.name}: no description in its Options block"


# GRC's own load, as its GUI does it when it opens a file (Notebook page: parse, import_data; then
# rewrite + validate): imports and variables are evaluated in this process. Prints {file: [errors]}.
GRC_OPEN_CHECK = """
import json, sys
from gnuradio import gr
from gnuradio.grc.core.platform import Platform
platform = Platform(version=gr.version(), prefs=gr.prefs(),
                    version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()))
platform.build_library()
errors = {}
for path in sys.argv[1:]:
    flow_graph = platform.make_flow_graph()
    flow_graph.grc_file_path = path
    flow_graph.import_data(platform.parse_flow_graph(path))
    flow_graph.rewrite()
    flow_graph.validate()
    errors[path] = flow_graph.get_error_messages()
print("GRC_ERRORS " + json.dumps(errors))
"""


def errors_as_grc_shows_them(paths: list[Path]) -> dict[str, list[str]]:
    """The error messages of each flowgraph, evaluated by GRC under the interpreter and environment that
    ``semcom grc`` gives gnuradio-companion."""
    from semcom.companion import companion_command, companion_env

    interpreter = companion_command([])[0]
    run = subprocess.run([interpreter, "-c", GRC_OPEN_CHECK, *map(str, paths)], env=companion_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("GRC_ERRORS "))
    return json.loads(line.removeprefix("GRC_ERRORS "))


def broken_copy(grc: Path, out_dir: Path) -> Path:
    """The flowgraph with an import GRC cannot evaluate: what a user saw before ``semcom grc``."""
    broken = out_dir / grc.name
    broken.write_text(grc.read_text().replace("import semcom.paths", "import semcom.no_such_module"))
    assert broken.read_text() != grc.read_text()
    return broken


def test_every_example_opens_with_no_error_under_semcom_grc(tmp_path):
    control = broken_copy(EXAMPLE_GRC, tmp_path)
    errors = errors_as_grc_shows_them(EXAMPLES + [control])
    assert errors.pop(str(control)), "the check found nothing wrong with a flowgraph whose import fails"
    assert {name: e for name, e in errors.items() if e} == {}


def red_pixels_below_toolbar(png: Path, toolbar_px: int = 70) -> int:
    """Pixels of GRC's error colour (Pango 'red', #FF0000: error blocks, parameters, imports) under the
    toolbar, whose stop/kill icons are red by design."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)[toolbar_px:]
    return int(((rgb[..., 0] >= 200) & (rgb[..., 1] <= 60) & (rgb[..., 2] <= 60)).sum())


def block_pixels(png: Path) -> int:
    """Pixels of GRC's enabled-block background (#F1ECFF): the flowgraph is on screen."""
    rgb = np.asarray(Image.open(png).convert("RGB"))
    return int((rgb == (0xF1, 0xEC, 0xFF)).all(axis=2).sum())


def start_grc_screenshot(grc: Path, out: Path) -> subprocess.Popen:
    """``semcom grc FILE`` under its own Xvfb, its window screenshotted into ``out`` once GRC has loaded the file."""
    xvfb_run = shutil.which("xvfb-run")
    assert xvfb_run, "xvfb-run not on PATH (Debian package xvfb; scripts/bootstrap.sh installs it)"
    prefs = out.with_suffix(".conf")     # a fresh user: no reopened files, a window that shows the flowgraph
    prefs.write_text("[main]\nmain_window_width = 1400\nmain_window_height = 900\n")
    env = {**os.environ, "GRC_PREFS_PATH": str(prefs), "PYTHONPATH": with_path(REPO / "python", "PYTHONPATH")}
    env.pop("QT_QPA_PLATFORM", None)
    command = [xvfb_run, "-a", "-s", "-screen 0 1400x900x24", sys.executable, str(REPO / "tests" / "grc_screenshot.py"),
               "--marker", ">>> Done", "--timeout-s", "120", "--out", str(out), "--",
               sys.executable, "-m", "semcom.cli", "grc", str(grc)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_semcom_grc_window_shows_no_red(tmp_path):
    """What the user sees: the README's command opens loopback.grc with no red (and a broken import is red)."""
    clean, broken = tmp_path / "loopback.png", tmp_path / "broken.png"
    runs = [start_grc_screenshot(EXAMPLE_GRC, clean),          # two X servers side by side: half the wait
            start_grc_screenshot(broken_copy(EXAMPLE_GRC, tmp_path), broken)]
    for run in runs:
        output, _ = run.communicate(timeout=240)   # marker 120 s + drawing 60 s + margin
        assert run.returncode == 0, output[-3000:]
    assert block_pixels(clean) > 20_000 and block_pixels(broken) > 20_000, "GRC's blocks are not on screen"
    assert red_pixels_below_toolbar(broken) > 100, "the screenshot check cannot see GRC's red"
    assert red_pixels_below_toolbar(clean) == 0, f"GRC shows errors in red: see {clean}"


def test_semcom_grc_says_what_is_missing_without_a_display():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    run = subprocess.run([sys.executable, "-m", "semcom.cli", "grc", str(EXAMPLE_GRC)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "no display" in run.stderr and "xvfb-run" in run.stderr


@pytest.mark.parametrize("broken, error", [("require_version", ValueError("Namespace Gtk not available")),
                                           ("require_foreign", ImportError("no cairo foreign struct"))])
def test_semcom_grc_names_the_debian_packages_when_gtk_is_missing(monkeypatch, broken, error):
    import gi

    from semcom.companion import CompanionError, check_gui

    def missing(*_args):
        raise error
    monkeypatch.setattr(gi, broken, missing)
    with pytest.raises(CompanionError, match="apt-get install gir1.2-gtk-3.0 python3-gi-cairo"):
        check_gui({"DISPLAY": ":0"})


@pytest.mark.slow
def test_gui_loopback_shows_received_images_and_the_slider_sets_the_channel(qt_app):
    """loopback_gui.py as GRC runs it: the image sink displays a received image with its figures, and
    moving the SNR slider changes the channel model's noise while the flowgraph runs."""
    from semcom.radio.packet import noise_voltage_for_snr

    tb, sinks, window = run_qt_flowgraph(GUI_EXAMPLE_PY, images=1, timeout_s=RUN_TIMEOUT_S + 45)
    view = sinks[0].view
    figures = dict(view.figures_shown)
    assert view.received.pixmap() is not None and not view.received.pixmap().isNull()
    assert float(figures["key region PSNR / SSIM"].split()[0]) > 30.0, figures      # 12 dB: every PDU comes through
    assert figures["PDUs"].endswith(" 0 lost"), figures
    assert window.width() >= 1000 and not window.isNull()
    before, initial_snr_db = tb.channels_channel_model_0.noise_voltage(), tb.snr_db
    tb.set_snr_db(3.0)       # what the QT GUI Range calls when the slider moves
    expected = noise_voltage_for_snr(3.0, tb.modulation, tb.samples_per_symbol)
    assert tb.noise_voltage == pytest.approx(expected)
    # the channel reports its noise source's amplitude (a fixed factor of the voltage set): compare ratios
    assert tb.channels_channel_model_0.noise_voltage() / before == pytest.approx(
        expected / noise_voltage_for_snr(initial_snr_db, tb.modulation, tb.samples_per_symbol))
