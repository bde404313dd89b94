#!/usr/bin/env bash
# PPO on Pong (ALE/Pong-v5: sticky actions 0.25, minimal action set, no episodic life) to a mean return of
# >= +18 over the last 100 episodes within 10M frames (2.5M agent steps), on one GPU.
#
# NOT RUN: no GPU was available when this script was written (2 shared CPU cores only). It is the ppo-pong recipe
# (CleanRL's ppo_atari hyperparameters) with the budget cut to 10M frames, so the learning rate anneals to 0 over
# 2.5M steps instead of 10M, which speeds up the late phase. summary.json reports env_steps_to_threshold and
# wall_time_to_threshold_s for target_return 18; the script exits non-zero when the threshold was not reached.
#
# Usage: benchmarks/gpu_pong.sh [seed] [extra accelrl overrides...]
set -euo pipefail
seed="${1:-0}"
shift || true
out="${OUT_DIR:-runs-gpu-pong}"
mkdir -p "$out"
cd "$out"
accelrl fit --recipe ppo-pong \
  --seed_everything "$seed" \
  --trainer.accelerator gpu --trainer.devices 1 \
  --data.total_env_steps 2500000 \
  --summary.target_return 18 \
  --torch_threads 0 \
  --trainer.enable_progress_bar false \
  "$@" | tee "fit-seed$seed.log"
summary="$(tail -n 1 "fit-seed$seed.log" | sed 's/^summary: //')"
python - "$summary" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({k: s[k] for k in ("env_steps", "episode_return_mean", "env_steps_to_threshold",
                                     "wall_time_to_threshold_s", "wall_time_s", "env_steps_per_s")}, indent=2))
sys.exit(0 if s.get("env_steps_to_threshold") is not None else 1)
PY
