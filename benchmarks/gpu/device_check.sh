#!/usr/bin/env bash
# One run of the GPU machine (<= 9 minutes): install the wheelhouse (--no-index), run the CUDA-relevant tests,
# the GPU sampler benchmark, and PPO on ALE/Pong-v5 until a training mean of +18 or 6 minutes, writing each
# part's JSON summary, logs and the learning curve under the output folder (see docs/gpu.md).
#
# Usage: bash benchmarks/gpu/device_check.sh [--cpu] [--no-install] [--out DIR]
#   --cpu         dry run on the CPU with tiny budgets (~1-2 minutes): checks the kit itself
#   --no-install  use the interpreter's packages as they are (PYTHON=..., default python3; with --cpu the
#                 project's .venv when it exists)
#   --out DIR     where results go (default: $OUT, the device run's returned folder)
# Environment: PONG_ARGS extra `accelrl fit` overrides appended to the Pong run; KIT_BUDGET_S the whole run's
# wall-clock budget (default 540 s on the GPU, 240 s with --cpu).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cpu=0
install=1
out="${OUT:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) cpu=1 ;;
    --no-install) install=0 ;;
    --out) out="$2"; shift ;;
    *) echo "unknown option $1 (expected --cpu, --no-install, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$out" ]]; then echo "no output folder: pass --out DIR or set OUT" >&2; exit 2; fi
mkdir -p "$out"/{install,tests,sampler,pong}
out="$(cd "$out" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ $cpu == 1 && -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
start=$(date +%s)
budget="${KIT_BUDGET_S:-$([[ $cpu == 1 ]] && echo 240 || echo 540)}"
remaining() { echo $((start + budget - $(date +%s))); }
work="$(mktemp -d)"  # the site folder and the run folder (checkpoints) stay out of the returned folder
trap 'rm -rf "$work"' EXIT
summarize() { "$PYTHON" "$here/summarize.py" "$@"; }
gpu_flag=$([[ $cpu == 1 ]] || echo --gpu)
log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - start))s] $*"; }

# --- install: the wheelhouse into a private site folder (no venv, no network) ---
log "install"
site="$work/site"
irc=0
if [[ $install == 1 ]]; then
  if ! "$PYTHON" -m pip install --no-index --no-deps --disable-pip-version-check --target "$site" \
    "$here"/wheelhouse/*.whl >"$out/install/pip.log" 2>&1; then
    # no usable pip: a wheel is a zip of its site-packages files (entry points unused: the kit runs `-m`)
    "$PYTHON" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
      "$site" "$here"/wheelhouse/*.whl >>"$out/install/pip.log" 2>&1 || irc=$?
  fi
fi
# the working tree first: the code that travelled with this run is the code under test
export PYTHONPATH="$root:$site:$here${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - "$irc" "$cpu" >"$out/install/summary.json" 2>"$out/install/import.log" <<'PY' || true  # its summary says what failed
"""Versions of everything the kit imports, and the GPU torch sees: the install part's summary."""
import importlib, json, sys
import torch
rc, cpu = int(sys.argv[1]), sys.argv[2] == "1"
names = ["torch", "lightning", "numpy", "tensordict", "gymnasium", "ale_py", "jsonargparse", "msgpack", "cv2",
         "lightning_accelrl", "lightning_accelrl.cli"]
versions, errors = {}, {}
for n in names:
    try:
        versions[n] = getattr(importlib.import_module(n), "__version__", "?")
    except Exception as e:  # noqa: BLE001 - report every import failure, not only the first
        errors[n] = f"{type(e).__name__}: {e}"
cuda = torch.cuda.is_available()
out = {"part": "install", "rc": rc, "python": sys.version.split()[0], "versions": versions, "errors": errors,
       "cuda": cuda, "gpu": torch.cuda.get_device_name() if cuda else None}
out["ok"] = rc == 0 and not errors and (cpu or cuda)
print(json.dumps(out, indent=2))
sys.exit(0 if out["ok"] else 1)
PY
log "install: rc=$irc"

# --- tests: those named for CUDA or the GPU in the test files that mention CUDA (they skip on the CPU) ---
log "tests"
mapfile -t files < <(cd "$root" && grep -rlE --include='test_*.py' 'cuda' tests | sort)
trc=0
(cd "$root" && timeout "$([[ $cpu == 1 ]] && echo 90 || echo 120)" "$PYTHON" -m pytest -q -p no:cacheprovider \
  -m "not slow" -k "cuda or gpu" --junitxml "$out/tests/junit.xml" "${files[@]}") >"$out/tests/pytest.log" 2>&1 || trc=$?
summarize tests "$out/tests/junit.xml" "$trc" "$out/tests/summary.json" $gpu_flag

# --- sampler: the benchmark's CNN configurations with the policy on the GPU (TorchRL and Gymnasium left out) ---
log "sampler"
if [[ $cpu == 1 ]]; then
  bargs=(--envs 4 --repeats 1 --vsteps 8 --device cpu)
else
  bargs=(--envs 64 128 --repeats 3 --vsteps 128 --device cuda)
fi
src=0
(cd "$root" && timeout "$([[ $cpu == 1 ]] && echo 150 || echo 90)" "$PYTHON" benchmarks/sampler/bench_sampler.py \
  "${bargs[@]}" --skip ef --no-write) >"$out/sampler/bench.log" 2>&1 || src=$?
summarize sampler "$out/sampler/bench.log" "$src" "$out/sampler/summary.json"

# --- pong: PPO to a training mean of +18, or the time left (at most 6 minutes of training) ---
left=$(($(remaining) - 40))  # setup, the summary and the copy-out
train_s=$((left < 360 ? left : 360))
[[ $cpu == 1 && $train_s -gt 15 ]] && train_s=15
log "pong: ${train_s}s of training"
if [[ $cpu == 1 ]]; then
  # a budget far beyond 15 s: the dry run checks that max_time ends the fit and the summary is still written
  pargs=(--trainer.accelerator cpu --data.num_envs 4 --data.rollout_steps 16 --model.init_args.minibatch_size 32
    --model.init_args.update_epochs 1 --data.total_env_steps 1000000 --data.updates_per_epoch 2
    --trainer.log_every_n_steps 5)
else
  # 64 envs on 16 cores' C++ threads; 64 x 64 = 4096 steps per update, 4 minibatches of 1024, 4 epochs
  pargs=(--trainer.accelerator gpu --trainer.devices 1 --data.num_envs 64 --data.rollout_steps 64
    --model.init_args.minibatch_size 1024 --data.total_env_steps 5000000 --trainer.log_every_n_steps 10)
fi
mkdir -p "$work/pong"
prc=0
if [[ $train_s -gt 0 ]]; then
  # shellcheck disable=SC2086  # PONG_ARGS: whitespace-separated overrides
  (cd "$work/pong" && timeout $((train_s + 90)) "$PYTHON" -m lightning_accelrl.cli fit --recipe ppo-pong \
    --seed_everything 0 "${pargs[@]}" --trainer.enable_progress_bar false \
    --trainer.max_time "$(printf '00:00:%02d:%02d' $((train_s / 60)) $((train_s % 60)))" \
    --trainer.callbacks+=stop_at_target.StopAtTarget --trainer.callbacks.target 18 \
    --summary.target_return 18 ${PONG_ARGS:-}) >"$out/pong/fit.log" 2>&1 || prc=$?
else
  prc=124
fi
# the run folder without checkpoints: summary.json, metrics.csv (the curve), config, TensorBoard events
(cd "$work/pong" && find . -type f ! -name '*.ckpt' -print0 | xargs -0 -r cp --parents -t "$out/pong") 2>/dev/null
summarize pong "$out/pong" "$prc" "$out/pong/summary.json"

summarize kit "$out"
log "done"
"$PYTHON" -c "import json,sys; k=json.load(open(sys.argv[1])); print(json.dumps({n: {x: p.get(x) for x in ('ok','rc')} for n, p in k['parts'].items()})); sys.exit(0 if k['ok'] else 1)" "$out/kit.json"
