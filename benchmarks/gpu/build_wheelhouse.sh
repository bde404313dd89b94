#!/usr/bin/env bash
# Builds benchmarks/gpu/wheelhouse/: cp312 manylinux x86_64 wheels of what the GPU machine's image lacks
# (requirements-device.txt) plus this project as a pure-Python wheel, at most 64 MiB in all (one run's carry).
# Run on a machine with PyPI access; the device installs from the folder with --no-index (device_check.sh).
# Usage: benchmarks/gpu/build_wheelhouse.sh   (PYTHON=... to choose the interpreter whose pip is used)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
house="$here/wheelhouse"
limit=$((64 * 1024 * 1024))
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
rm -rf "$house"
mkdir -p "$house"
mapfile -t pins < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/requirements-device.txt" | grep -v '^$')
echo "downloading ${#pins[@]} wheels for cp312 manylinux x86_64"
for pin in "${pins[@]}"; do
  "$PYTHON" -m pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "$pin" -d "$house"
done
echo "building the project wheel (pure Python, no deps)"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation "$root" -w "$house"
"$PYTHON" - "$house" "$here/requirements-device.txt" "$limit" <<'PY'
"""List the wheelhouse, check every pin has one wheel and every wheel's requirements are met, enforce the limit."""

import re
import sys
import zipfile
from pathlib import Path

house, reqs, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
# On the device image already (torch 2.11.0+cu130, lightning 2.6.6 and their dependencies).
image = {"torch", "lightning", "pytorch-lightning", "numpy", "rich", "tensorboard", "pytest", "pyyaml",
         "opencv-python-headless", "packaging", "typing-extensions", "torchmetrics", "lightning-utilities",
         "fsspec", "filelock", "jinja2", "sympy", "networkx"}
# Declared by the project but not needed on the device: torchrl (TorchRL env inputs only), optional extras.
not_needed = {"torchrl"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


wheels = sorted(house.glob("*.whl"))
names = {norm(w.name.split("-")[0]) for w in wheels}
pins = [norm(re.split(r"[=<>!~]", line.split("#")[0].strip())[0]) for line in reqs.read_text().splitlines()
        if line.split("#")[0].strip()]
problems = [f"no wheel for {p}" for p in pins if p not in names]
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            spec = line.split(":", 1)[1].strip()
            if ";" in spec:
                marker = spec.split(";", 1)[1]
                if "extra ==" in marker or re.search(r'python_version\s*<\s*"3\.(1[0-2]|[0-9])"', marker):
                    continue  # an extra, or a backport for Pythons older than the device's 3.12
            dep = norm(re.split(r"[\s\[=<>!~;(]", spec, maxsplit=1)[0])
            if dep not in names and dep not in image and dep not in not_needed:
                problems.append(f"{w.name} requires {spec!r}: neither in the wheelhouse nor on the image")
total = 0
for w in wheels:
    size = w.stat().st_size
    total += size
    print(f"{size / 2**20:8.2f} MiB  {w.name}")
print(f"{total / 2**20:8.2f} MiB  total ({len(wheels)} wheels; limit {limit / 2**20:.0f} MiB)")
if total > limit:
    problems.append(f"the wheelhouse is {total} bytes, over the {limit}-byte carry limit")
for p in problems:
    print("error:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
