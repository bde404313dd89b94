#!/usr/bin/env bash
# Create (or refresh) the peer virtual environment used by the learning benchmarks.
# Stable-Baselines3 lives apart from our own venv so its pins never touch ours.
# Idempotent: re-running it only installs what is missing or differs from the pins.
#
#   bash benchmarks/setup_peers.sh            # creates benchmarks/.venv-sb3
#   SB3_VENV=/some/where bash benchmarks/setup_peers.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SB3_VENV:-$here/.venv-sb3}"
python="${PYTHON:-python3}"

# torch==2.13.0 resolves to the local CPU wheel on our machines; an unpinned torch pulls CUDA wheels.
pins=(torch==2.13.0 stable-baselines3==2.9.2 "gymnasium[classic-control]==1.4.0")

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
"$venv/bin/python" - <<'EOF'
import gymnasium, stable_baselines3, torch
print(f"sb3 venv ready: stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}, "
      f"gymnasium {gymnasium.__version__}")
EOF
