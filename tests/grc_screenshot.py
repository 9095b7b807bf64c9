"""Screenshots of what a user sees: GRC's window under Xvfb, and a QT GUI flowgraph's window.

GRC (or any GUI program): start it, wait until it prints a marker, grab the whole X screen with GDK
(which GRC needs anyway, so no ImageMagick or xwd), stop it. Run under Xvfb::

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python tests/grc_screenshot.py \\
        --marker ">>> Done" --out grc.png -- .venv/bin/semcom grc examples/loopback.grc

A QT GUI flowgraph (grcc output): run its top block in this process until its image sinks showed
``--images`` images, then grab the window with Qt (no display needed; QT_QPA_PLATFORM=offscreen).
The README's screenshot::

    QT_QPA_PLATFORM=offscreen .venv/bin/python tests/grc_screenshot.py --qt-flowgraph examples/loopback_gui.py \\
        --images 2 --out docs/img/loopback_gui.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def screenshot(path: Path) -> None:
    """Save the X root window (the whole screen) as PNG."""
    import gi
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk

    root = Gdk.get_default_root_window()
    if root is None:
        raise RuntimeError("no X display to take a screenshot of (run under xvfb-run)")
    pixbuf = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
    pixbuf.savev(str(path), "png", [], [])


def wait_until_drawn(out: Path, deadline: float, min_drawn: float = 0.3) -> None:
    """Screenshot into ``out`` until the screen is drawn (a share of non-black pixels) and two
    consecutive shots agree: a window is mapped a while after its program says it is ready."""
    import numpy as np
    from PIL import Image

    previous = None
    while True:
        screenshot(out)
        pixels = np.asarray(Image.open(out).convert("RGB"))
        drawn = float(pixels.any(axis=2).mean())
        if drawn >= min_drawn and previous is not None and np.array_equal(pixels, previous):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the screen was not drawn in time ({drawn:.0%} non-black pixels)")
        previous = pixels
        time.sleep(1.0)


DRAW_TIMEOUT_S = 60.0


def run_and_capture(command: list[str], marker: str, out: Path, timeout_s: float, settle_s: float,
                    env: dict | None = None) -> str:
    """Run ``command`` until ``marker`` appears in its output (then ``settle_s`` more), screenshot once the
    screen is drawn and still (within ``DRAW_TIMEOUT_S``), stop it.

    Returns what the program printed; raises TimeoutError (after stopping it) when the marker never came.
    """
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}    # the marker must not wait in a buffer
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        started = time.monotonic()
        while not seen.is_set():
            if process.poll() is not None or time.monotonic() - started > timeout_s:
                reader.join(timeout=2)
                raise TimeoutError(f"{marker!r} not printed within {timeout_s:.0f} s "
                                   f"(exit status {process.poll()}):\n{''.join(lines)[-3000:]}")
            time.sleep(0.1)
        marker_s = time.monotonic() - started
        time.sleep(settle_s)
        try:        # drawing gets its own budget: a marker that came late must not leave it none
            wait_until_drawn(out, time.monotonic() + DRAW_TIMEOUT_S)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; {marker!r} came after {marker_s:.0f} s; the program printed:\n"
                               f"{''.join(lines)[-3000:]}") from None
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=2)
    return "".join(lines)


# One QApplication for the whole process, and every QT GUI top block run here, kept until the process
# ends (as a generated QT GUI script keeps its own): Qt widgets outliving their QApplication, or a top
# window deleted while gr-qtgui sinks still own their widgets, crash the interpreter at a later collection.
_KEPT: list = []


def qt_application():
    """The process's QApplication (created offscreen when there is none)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import Qt

    if not _KEPT:
        _KEPT.append(Qt.QApplication.instance() or Qt.QApplication(["semcom-tests"]))
    return _KEPT[0]


def run_qt_flowgraph(script: Path, images: int, timeout_s: float, size: tuple[int, int] = (1200, 1000)):
    """Start the QT GUI top block of a grcc script and run Qt's event loop until every semcom image
    sink in it showed ``images`` images. Returns (top block, its image sinks, the window as QImage);
    the top block is stopped. Raises TimeoutError when the images did not come."""
    import importlib.util

    from PyQt5 import Qt

    from semcom.radio.image_sink import image_sink

    spec = importlib.util.spec_from_file_location(f"semcom_flowgraph_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = qt_application()
    tb = getattr(module, script.stem)()
    _KEPT.append(tb)
    sinks = [v for v in vars(tb).values() if isinstance(v, image_sink)]
    if not sinks:
        raise ValueError(f"{script} has no semcom image sink")
    tb.resize(*size)
    tb.show()
    tb.start()
    try:
        started = time.monotonic()
        while min(s.view.images_shown for s in sinks) < images:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{script.name}: {[s.view.images_shown for s in sinks]} images shown after "
                                   f"{timeout_s:.0f} s, wanted {images}")
            app.processEvents(Qt.QEventLoop.AllEvents, 100)
            time.sleep(0.02)
        for _ in range(20):                 # let the plots repaint once more
            app.processEvents(Qt.QEventLoop.AllEvents, 50)
        window = tb.grab().toImage()
    finally:
        tb.stop()
        tb.wait()
    return tb, sinks, window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marker", help="text the program prints when its window is ready")
    parser.add_argument("--qt-flowgraph", type=Path, help="grcc output of a QT GUI flowgraph, run in this process")
    parser.add_argument("--images", type=int, default=2, help="with --qt-flowgraph: images to wait for")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--settle-s", type=float, default=2.0, help="wait after the marker before the screenshot")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- program and arguments")
    args = parser.parse_args()
    if args.qt_flowgraph:
        _, sinks, window = run_qt_flowgraph(args.qt_flowgraph, args.images, args.timeout_s)
        window.save(str(args.out))
        print(f"wrote {args.out} after {sinks[0].view.images_shown} images")
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.marker:
        parser.error("give --marker and a program after --, or --qt-flowgraph")
    output = run_and_capture(command, args.marker, args.out, args.timeout_s, args.settle_s)
    print(output[-2000:])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
