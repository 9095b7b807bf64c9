#!/usr/bin/env bash
# Install the evaluation photos of ../shared/PHOTOS.md (photos no shipped model trained on), 512 px wide PNG:
#   bash scripts/eval_photos.sh [OUT_DIR]      (default: ~/.cache/gr-semcom/eval-photos, or $SEMCOM_EVAL_PHOTOS)
# Debian packages plasma-workspace-wallpapers (12 photos) and python3-matplotlib (grace_hopper) via apt;
# scikit-learn's china/flower from its wheel (downloaded, not installed); scikit-image's chelsea/coffee.
# Provenance and licences: python/semcom/eval/photos.py and OUT_DIR/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
dpkg -s plasma-workspace-wallpapers >/dev/null 2>&1 || missing+=(plasma-workspace-wallpapers)
dpkg -s python3-matplotlib >/dev/null 2>&1 || missing+=(python3-matplotlib)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || bash scripts/bootstrap.sh setup
exec .venv/bin/python -m semcom.eval.photos ${1:+--out "$1"}
