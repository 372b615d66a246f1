#!/usr/bin/env bash
# Issue 10's checks on a GPU machine in one call, within a deadline: the CUDA tests, N graphed
# pretraining runs in one process on N streams and stacked into one step (runs_per_process.py), a
# real stacked pretraining of three seeds on Beauty (scripts/pretrain.py --seed 0 1 2), the speed benchmark
# (fixed-shape steps replayed as CUDA graphs, compile cuda-graph; the same with the loss
# compiled by inductor first, an experiment; eager), a real pretraining run on Beauty under
# cuda-graph, N concurrent pretraining jobs on the card (eager and cuda-graph; under CUDA MPS
# only when `mpsjobs` is named), N concurrent graphed finetuning jobs with their validation, a
# profile of a step, and torch.compile (the whole fixed-shape
# loss under reduce-overhead; the encoder alone). Each step's JSON lands in $OUT; a step that
# fails or runs out of time is logged and the next one still runs.
#
# Here:   bash benchmarks/device_bundle.sh     (polars wheel + Beauty into .device/, git-ignored)
# There:  the device tool's run, carry [".device"], timeout_s 500:
#           bash benchmarks/device_check.sh                 # every step, in priority order
#           bash benchmarks/device_check.sh graph run       # only these steps (a rerun)
# Anywhere without a GPU, for a rehearsal of the steps that need no CUDA graph:
#   DEVICE=cpu BATCHES=5 JOBS="1 2" bash benchmarks/device_check.sh env tests stacked stackedinline speed jobs profile
#
# Environment: OUT (default benchmarks/out/device), DEVICE (cuda), DEADLINE (seconds for the
# whole script, default 450), BATCHES (timed batches per epoch, 300), JOBS ("1 2 4 8"),
# STREAM_RUNS (runs in one process of the streams step, "1 2 3 4 6"), STACKED_RUNS (of the stacked step, "1 2 4 8"),
# COMPILE (torch.compile mode of the grid and compile steps, reduce-overhead), RUN_EPOCHS (3: epochs of
# the run and stackedrun steps), RUN_COMPILE (their --compile, cuda-graph), STACK_SEEDS (the seeds of
# stackedrun, "0 1 2"), FT_EPOCHS (4: epochs of each finetune run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/device}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-450}
BATCHES=${BATCHES:-300}
JOBS=${JOBS:-1 2 4 8}
STREAM_RUNS=${STREAM_RUNS:-1 2 3 4 6}
STACKED_RUNS=${STACKED_RUNS:-1 2 4 8}
COMPILE=${COMPILE:-reduce-overhead}
RUN_COMPILE=${RUN_COMPILE:-cuda-graph}
STACK_SEEDS=${STACK_SEEDS:-0 1 2}
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
START=$SECONDS
export PYTHONUNBUFFERED=1

say() { echo "[$(date -u +%H:%M:%S) +$(( SECONDS - START ))s] $*" | tee -a "$LOG"; }

# The machine reaches no registry: where polars is missing, install the carried wheels where
# Python finds them (where it is installed, as in the project's venv, leave it be).
site=/tmp/s3rec-site
if ! python3 -c "import polars" 2> /dev/null && compgen -G ".device/wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    .device/wheels/*.whl >> "$LOG" 2>&1 || { say "could not install .device/wheels"; exit 1; }
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
SOURCE=()
[ -f .device/data/Beauty.txt ] && SOURCE=(--source .device/data)

# step NAME LIMIT_S OUTPUT COMMAND...: run it with its stdout in $OUT/OUTPUT (stderr in the log),
# unless less than LIMIT_S of the deadline is left. The output is written under a temporary
# name and gets its own only when the command succeeds: a failed or timed-out step's partial
# output is kept as OUTPUT.failed (none when empty), never as a JSON file that does not parse.
step() {
  local name=$1 limit=$2 output=$3; shift 3
  local left=$(( DEADLINE - (SECONDS - START) ))
  if [ "$left" -lt "$limit" ]; then
    say "$name: skipped, ${left}s left of the deadline and it may take ${limit}s"; return
  fi
  say "$name: $*"
  local began=$SECONDS part="$OUT/.$output.part"
  rm -f "$OUT/$output" "$OUT/$output.failed"
  timeout "$limit" "$@" > "$part" 2>> "$LOG"
  local rc=$?
  if [ "$rc" = 0 ]; then mv "$part" "$OUT/$output"
  elif [ -s "$part" ]; then mv "$part" "$OUT/$output.failed"
  else rm -f "$part"; fi
  say "$name: rc $rc in $(( SECONDS - began ))s$( [ "$rc" = 124 ] && echo " (timed out)")"
}

environment() {
  { date -u; uname -a; nvidia-smi 2>&1 | head -20
    python3 -c 'import sys, torch, numpy, polars, pyarrow
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "numpy", numpy.__version__, "polars", polars.__version__, "pyarrow", pyarrow.__version__)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
    git log --oneline -1 2>/dev/null; } 2>&1
}

# training_run KIND VARIANT MODE SETTINGS RESULT: Beauty prepared once by scripts/prepare_data.py,
# then scripts/KIND.py (pretrain or finetune) of VARIANT, seed 0, with --compile MODE and
# --settings SETTINGS, as a workflow job runs it; prints the run's RESULT file, and its epoch
# history goes to $OUT/KIND-MODE-history.csv.
training_run() {
  local kind=$1 variant=$2 mode=$3 settings=$4 result=$5 data=/tmp/s3rec-beauty run=/tmp/s3rec-$1-$3
  prepare_beauty "$data" || return 1
  rm -rf "$run"
  python3 "scripts/$kind.py" --data "$data" --variant "$variant" --seed 0 --out-dir "$run" --device "$DEVICE" \
    --threads 4 --compile "$mode" --settings "$settings" >&2 || return 1
  cp "$run/${kind}_history.csv" "$OUT/$kind-$mode-history.csv"
  cat "$run/$result"
}
prepare_beauty() {
  [ -d "$1" ] || python3 scripts/prepare_data.py --format s3rec --sequences .device/data/Beauty.txt \
    --attributes .device/data/Beauty_item2attributes.json --out "$1" >&2
}
# stacked_run MODE: seeds STACK_SEEDS pretrained as one stacked model (scripts/pretrain.py with several
# --seed, as the workflow's pretrain_stacked runs it), RUN_EPOCHS epochs of the paper preset, dense
# heads; prints seed 0's pretrain_run.json, the group's epochs go to $OUT/pretrain-stacked-MODE-history.csv.
stacked_run() {
  local data=/tmp/s3rec-beauty run=/tmp/s3rec-stacked-$1 dirs=() seed
  prepare_beauty "$data" || return 1
  rm -rf "$run"
  for seed in $STACK_SEEDS; do dirs+=("$run/seed$seed"); done
  python3 scripts/pretrain.py --data "$data" --variant full --seed $STACK_SEEDS --out-dir "${dirs[@]}" \
    --device "$DEVICE" --threads 4 --compile "$1" \
    --settings "{\"pretrain\": {\"epochs\": ${RUN_EPOCHS:-3}, \"preset\": \"paper\"}}" >&2 || return 1
  cp "${dirs[0]}/pretrain_stacked_history.csv" "$OUT/pretrain-stacked-$1-history.csv"
  cat "${dirs[0]}/pretrain_run.json"
}
# pretraining_run MODE: RUN_EPOCHS epochs of the paper preset, dense heads.
pretraining_run() {
  training_run pretrain full "$1" "{\"pretrain\": {\"epochs\": ${RUN_EPOCHS:-3}, \"preset\": \"paper\"}}" \
    pretrain_run.json
}
# finetuning_run MODE: SASRec from scratch (variant none), FT_EPOCHS epochs of the paper's
# finetuning (bce, batch 256), validation after each (history: seconds, valid_seconds).
finetuning_run() {
  training_run finetune none "$1" "{\"finetune\": {\"epochs\": ${FT_EPOCHS:-4}, \"batch_size\": 256, \"lr\": 0.001}}" \
    metrics.json
}
export -f prepare_beauty training_run stacked_run pretraining_run finetuning_run
export DEVICE OUT STACK_SEEDS

# mps_jobs: graphjobs under CUDA MPS (processes' kernels share the card instead of taking turns),
# a control daemon of this user's own, pipes in /tmp, quit afterwards. Only when asked by name.
mps_jobs() {
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/s3rec-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/s3rec-mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if ! nvidia-cuda-mps-control -d >> "$LOG" 2>&1; then
    say "mpsjobs: could not start an MPS control daemon, skipped"; return
  fi
  step mpsjobs 180 jobs-cuda-graph-mps.json python3 benchmarks/jobs_per_device.py --device "$DEVICE" \
    --threads 2 --jobs $JOBS --batches "$BATCHES" --fixed-shapes --compile cuda-graph "${SOURCE[@]}"
  echo quit | nvidia-cuda-mps-control >> "$LOG" 2>&1
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}

run_step() {
  case $1 in
    env) say "env"; environment > "$OUT/env.txt"; cat "$OUT/env.txt" >> "$LOG" ;;
    # the inductor test compiles what crashed the H200 once (a segfault would end pytest and every
    # CUDA test after it): it runs apart, in the graphinductor step, which it belongs to
    tests) step tests 150 pytest.log python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
             tests/test_host_sync.py -k "not inductor" ;;
    speed) step speed 150 speed.json python3 benchmarks/speed.py --device "$DEVICE" --threads 4 \
             --batches "$BATCHES" --eval-batch-sizes 256 1024 4096 "${SOURCE[@]}" ;;
    jobs) step jobs 180 jobs.json python3 benchmarks/jobs_per_device.py --device "$DEVICE" --threads 2 \
            --jobs $JOBS --batches "$BATCHES" "${SOURCE[@]}" ;;
    profile) step profile 90 profile.json python3 benchmarks/profile_step.py --device "$DEVICE" --threads 4 \
               "${SOURCE[@]}" ;;
    graph) step graph 120 speed-cuda-graph.json python3 benchmarks/speed.py --device "$DEVICE" --threads 4 \
             --batches "$BATCHES" --skip-sequences --fixed-shapes --compile cuda-graph "${SOURCE[@]}" ;;
    graphinductor) step inductortest 150 pytest-inductor.log python3 -m pytest -q -p no:cacheprovider \
                     tests/test_cuda.py -k inductor
                   step graphinductor 240 speed-cuda-graph-inductor.json python3 benchmarks/speed.py \
                     --device "$DEVICE" --threads 4 --batches "$BATCHES" --skip-sequences --fixed-shapes \
                     --compile cuda-graph-inductor "${SOURCE[@]}" ;;
    run) step run 150 "run-$RUN_COMPILE.json" bash -c "pretraining_run $RUN_COMPILE" ;;
    stackedrun) step stackedrun 200 "run-stacked-$RUN_COMPILE.json" bash -c "stacked_run $RUN_COMPILE" ;;
    # both runs, the second also when the first fails; the step fails when either does
    finetune) step finetune 150 finetune-runs.log bash -c 'rc=0
                for mode in cuda-graph none; do
                  finetuning_run "$mode" || { echo "finetune $mode: failed" >&2; rc=1; }
                done
                exit $rc' ;;
    streams) step streams 200 runs-per-process.json python3 benchmarks/runs_per_process.py --device "$DEVICE" \
               --threads 4 --runs $STREAM_RUNS --batches "$BATCHES" "${SOURCE[@]}" ;;
    stacked) step stacked 200 runs-stacked.json python3 benchmarks/runs_per_process.py --device "$DEVICE" \
               --threads 4 --mode stacked --runs $STACKED_RUNS --batches "$BATCHES" "${SOURCE[@]}" ;;
    # the same with every seed's batches drawn in the training process: do the draw workers pay?
    stackedinline) step stackedinline 200 runs-stacked-in-process.json python3 benchmarks/runs_per_process.py \
                     --device "$DEVICE" --threads 4 --mode stacked --draw-in-process --runs $STACKED_RUNS \
                     --batches "$BATCHES" "${SOURCE[@]}" ;;
    mpsjobs) mps_jobs ;;
    ftjobs) step ftjobs 180 jobs-finetune-cuda-graph.json python3 benchmarks/jobs_per_device.py --kind finetune \
              --device "$DEVICE" --threads 2 --jobs $JOBS --batches "$BATCHES" --compile cuda-graph "${SOURCE[@]}" ;;
    graphjobs) step graphjobs 180 jobs-cuda-graph.json python3 benchmarks/jobs_per_device.py --device "$DEVICE" \
                 --threads 2 --jobs $JOBS --batches "$BATCHES" --fixed-shapes --compile cuda-graph "${SOURCE[@]}" ;;
    grid) step grid 260 speed-grid.json python3 benchmarks/speed.py --device "$DEVICE" --threads 4 \
            --batches "$BATCHES" --skip-sequences --fixed-shapes --compile "$COMPILE" "${SOURCE[@]}" ;;
    compile) step compile 200 speed-compile.json python3 benchmarks/speed.py --device "$DEVICE" --threads 4 \
               --batches "$BATCHES" --skip-sequences --compile "$COMPILE" "${SOURCE[@]}" ;;
  esac
}

ALL_STEPS=(env tests streams stacked stackedinline stackedrun graph finetune ftjobs graphinductor speed run jobs graphjobs profile grid compile)
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=("${ALL_STEPS[@]}")
for name in "${steps[@]}"; do  # every name checked first: a typo must not cost the steps before it
  if [[ " ${ALL_STEPS[*]} mpsjobs " != *" $name "* ]]; then
    say "unknown step $name (${ALL_STEPS[*]} mpsjobs); nothing run"; exit 2
  fi
done
for name in "${steps[@]}"; do run_step "$name"; done
say "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
