"""``semcom grc``: GNU Radio Companion under this interpreter, with the module's blocks on its path.

Debian's ``gnuradio-companion`` script starts ``/usr/bin/python3`` whatever venv is active, and
GRC evaluates a flowgraph's imports and variables in its own process: without our interpreter
every ``semcom`` import and every variable built from it shows in red. Running GRC as
``python -m gnuradio.grc`` under ``sys.executable`` (the venv, or wherever the module is installed)
fixes that; the flowgraphs GRC then runs get the same interpreter (their run command is ``{python}``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BLOCKS_PATH_ENV = "GRC_BLOCKS_PATH"
_MARKER_BLOCK = "semcom_semantic_tx.block.yml"
# What GRC's GUI needs from Debian beyond GNU Radio itself, by what fails without it.
GTK_PACKAGES = "gir1.2-gtk-3.0 python3-gi-cairo"


class CompanionError(RuntimeError):
    """GRC cannot start here; the message says what to install or set."""


def _block_dir_candidates() -> list[Path]:
    here = Path(__file__).resolve()
    found = [here.parents[2] / "grc"]                                # checkout: python/semcom/companion.py
    if len(here.parents) > 4:    # cmake install: <prefix>/lib/python3.X/*-packages/semcom/companion.py
        found.append(here.parents[4] / "share" / "gnuradio" / "grc" / "blocks")
    for prefix in (sys.prefix, "/usr/local", "/usr"):
        found.append(Path(prefix) / "share" / "gnuradio" / "grc" / "blocks")
    return found


def blocks_dir() -> Path:
    """The directory holding the module's block YAML: the checkout's grc/ or the installed share dir."""
    candidates = _block_dir_candidates()
    for path in candidates:
        if (path / _MARKER_BLOCK).is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise CompanionError(f"the semcom GRC blocks ({_MARKER_BLOCK}) were not found (looked in: {looked}); "
                         "run from the checkout or install the module with cmake")


def companion_env(base: dict | None = None) -> dict:
    """The environment GRC runs in: the caller's, with our blocks first on GRC_BLOCKS_PATH."""
    env = dict(os.environ if base is None else base)
    env[BLOCKS_PATH_ENV] = os.pathsep.join(filter(None, [str(blocks_dir()), env.get(BLOCKS_PATH_ENV)]))
    return env


def companion_command(files: list[str]) -> list[str]:
    """argv that starts GRC under this interpreter on ``files``."""
    return [sys.executable, "-m", "gnuradio.grc", *[str(Path(f).resolve()) for f in files]]


def check_gui(env: dict) -> None:
    """Raise CompanionError naming the missing Debian package or display, before GRC fails obscurely."""
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        raise CompanionError("no display (DISPLAY and WAYLAND_DISPLAY are unset): run it in a desktop session, "
                             "over ssh -X, or headless with xvfb-run semcom grc ...")
    try:
        import gi
    except ImportError:
        raise CompanionError(f"{sys.executable} cannot import gi (PyGObject): apt-get install python3-gi "
                             f"{GTK_PACKAGES}, and create the venv with --system-site-packages") from None
    try:
        gi.require_version("Gtk", "3.0")
        gi.require_version("PangoCairo", "1.0")
    except ValueError as exc:
        raise CompanionError(f"GTK 3 introspection data is missing ({exc}): apt-get install {GTK_PACKAGES}") from None
    try:
        gi.require_foreign("cairo")
    except ImportError:
        raise CompanionError(f"PyGObject's cairo support is missing: apt-get install {GTK_PACKAGES}") from None


def check_gnuradio() -> None:
    try:
        import gnuradio.grc  # noqa: F401  (only checks it is there)
    except ImportError:
        raise CompanionError(f"{sys.executable} cannot import gnuradio.grc: apt-get install gnuradio, and create "
                             "the venv with --system-site-packages") from None


def run_companion(files: list[str]) -> int:
    """Start GRC on ``files`` and wait for it; returns GRC's exit status."""
    for name in files:
        if not Path(name).is_file():
            raise CompanionError(f"{name}: no such flowgraph file")
    env = companion_env()
    check_gnuradio()
    check_gui(env)
    return subprocess.call(companion_command(files), env=env)


def cmd_grc(args) -> int:
    try:
        return run_companion(args.files)
    except CompanionError as exc:
        print(f"semcom grc: {exc}", file=sys.stderr)
        return 2


def add_companion_parser(commands) -> None:
    """Register ``semcom grc`` on the CLI's subparsers."""
    p = commands.add_parser("grc", help="open flowgraphs in GNU Radio Companion with this interpreter and the "
                            "semcom blocks (e.g. semcom grc examples/loopback.grc)")
    p.add_argument("files", nargs="*", metavar="FILE", help=".grc flowgraphs to open")
    p.set_defaults(run=cmd_grc)
