#!/usr/bin/env bash
# R1 (README.md here): `printworks render` against sharp and Pillow, one
# thread each, alternating, in one run. Prints medians, peak RSS, ratios, and
# checks every output's size, DPI, subsampling and PSNR against Pillow's.
#   bench/render/r1.sh [ROUNDS]     (R1_PILLOW=0 to leave Pillow out)
# Needs node/npm and python3; installs sharp, numpy and Pillow under
# target/bench-r1 on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work="$root/target/bench-r1"
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet numpy Pillow
fi
if [ ! -d "$work/node/node_modules/sharp" ]; then
  npm install --silent --no-save --prefix "$work/node" sharp
fi
cargo build --release -p printworks-local
photo="$work/photo_6000x4000.jpg"
[ -s "$photo" ] || "$work/venv/bin/python" bench/render/gen_photo.py "$photo" 3.0
cd "$work"
NODE_PATH="$work/node/node_modules" "$work/venv/bin/python" "$root/bench/render/r1.py" \
  "$root/target/release/printworks" "$photo" out "${1:-9}"
if [ "${R1_PILLOW:-1}" != "0" ]; then
  "$work/venv/bin/python" "$root/bench/render/verify_outputs.py" out/pillow
fi
