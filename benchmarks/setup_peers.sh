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
# MuJoCo (benchmarks/continuous_mujoco.py): the same mujoco as constraints-cpu.txt; Box2D (LunarLander:
# peers/sb3_a2c_lunar.py): the box2d our box2d extra installs.
pins=(torch==2.13.0 stable-baselines3==2.9.2 "gymnasium[classic-control,mujoco]==1.4.0" mujoco==4.0.1 box2d==2.3.10)

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
"$venv/bin/python" - <<'EOF'
import gymnasium, stable_baselines3, torch
print(f"sb3 venv ready: stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}, "
      f"gymnasium {gymnasium.__version__}")
EOF

# --- Reverb (replay benchmark: benchmarks/replay/) ----------------------------------------------------------
# dm-reverb 0.14.0 needs tensorflow-cpu 2.15.x and numpy < 2 (clashing with our venv), on Python 3.11 (its last
# wheels are cp38-cp311). Its own venv, benchmarks/.venv-reverb; idempotent like the block above.
#   SKIP_REVERB=1 bash benchmarks/setup_peers.sh       # SB3 only
#   REVERB_VENV=/some/where REVERB_PYTHON=python3.11 bash benchmarks/setup_peers.sh
if [ "${SKIP_REVERB:-0}" != "1" ]; then
    reverb_venv="${REVERB_VENV:-$here/.venv-reverb}"
    reverb_python="${REVERB_PYTHON:-python3.11}"
    reverb_pins=(dm-reverb==0.14.0 "tensorflow-cpu>=2.15,<2.16" "numpy<2")
    if [ ! -x "$reverb_venv/bin/python" ]; then
        "$reverb_python" -m venv "$reverb_venv"
    fi
    "$reverb_venv/bin/pip" install --quiet --disable-pip-version-check "${reverb_pins[@]}"
    TF_CPP_MIN_LOG_LEVEL=2 "$reverb_venv/bin/python" - <<'EOF_REVERB'
import importlib.metadata as md

import numpy
import reverb  # noqa: F401
import tensorflow

print(f"reverb venv ready: dm-reverb {md.version('dm-reverb')}, tensorflow-cpu {tensorflow.__version__}, "
      f"numpy {numpy.__version__}")
EOF_REVERB
fi
