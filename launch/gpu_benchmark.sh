#!/usr/bin/env bash
# The model measured on one GPU in 12 minutes: a preflight and a tiny smoke step that
# stop the run with one line when something is missing, then the cases below, in this
# order, each in its own process under its own time budget (`timeout`), so one slow
# compile costs its own case and no other:
#
#   vox_b32           configs/vox.py, bfloat16, the paper's batch 32: init, lower,
#                     compile, time to first step, step time, pairs/s, MFU, memory
#   vox_max           the same at the largest batch XLA's memory plan fits (sized from
#                     vox_b32's plan, so no probe compile)
#   hdtf512_b4        configs/hdtf_512.py, bfloat16, batch 4
#   animate_SIZE_DT   the inference path `animate` runs, at 512 (hdtf_512) and 256 (vox),
#                     bfloat16 and float32, batches 1 and 8: time to first frame, frames/s
#   torch_reference   the PyTorch reference model (tests/reference_torch.py) on the same
#                     GPU at the same sizes, dtypes and batches (skipped, with the reason,
#                     where torch has no CUDA)
#   matmul_bf16       8192x8192 bfloat16 matmuls: the rate this device reaches, the
#                     practical ceiling beside the datasheet's (benchmark.PEAK_FLOPS)
#
# Every benchmark process rewrites OUT/<case>.json after each of its phases, and
# OUT/summary.json is rewritten after every case, so a run cut off anywhere still
# leaves what it measured. Read the results with
# `python -m asrth_jax.benchmark_suite table OUT`.
set -euo pipefail

LOG_TAG=gpu_benchmark
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

CASES=(vox_b32 vox_max hdtf512_b4 animate_512_bf16 animate_512_fp32 animate_256_bf16
       animate_256_fp32 torch_reference matmul_bf16)
# vox_b32 and animate_512_bf16 answer the issue's must-shows, so they get the most.
declare -A BUDGET=(
  [preflight]=30 [smoke]=90
  [vox_b32]=180 [vox_max]=80 [hdtf512_b4]=80
  [animate_512_bf16]=60 [animate_512_fp32]=40 [animate_256_bf16]=35 [animate_256_fp32]=35
  [torch_reference]=60 [matmul_bf16]=30
)

usage() {
  cat <<USAGE
Usage: launch/gpu_benchmark.sh [options]

Runs, in order: preflight, smoke, ${CASES[*]}.
Default budgets (seconds): $(for c in preflight smoke "${CASES[@]}"; do printf '%s=%s ' "$c" "${BUDGET[$c]}"; done)
(together $(total=0; for c in preflight smoke "${CASES[@]}"; do total=$((total + BUDGET[$c])); done; echo $total) s; --total caps the whole run).

Options:
  --out DIR            per-case JSON and logs, summary.json (default: runs/gpu_benchmark)
  --only LIST          comma-separated cases to run after the smoke step (default: all);
                       'train' and 'inference' name the two halves (each under 10 min)
  --smoke-only         run the preflight and the smoke step only
  --budget CASE=SEC    one case's time budget (repeatable)
  --total SECONDS      the whole run's cap; a case gets what is left of it (default: 720)
  --steps N            timed steps / batches per case (default: 5)
  --remat              rematerialise the train cases' step
  --profile            trace 3 steps of each train case (asrth_jax.profile_summary)
  --mem-fraction F     XLA_PYTHON_CLIENT_MEM_FRACTION (default: 0.92)
  --autotune-level N   --xla_gpu_autotune_level, 0..5 (default: 4, XLA's); in each JSON
  --no-compile-cache   measure cold compiles even where the cache has the programs
  --wheels DIR         pure-Python wheels put on PYTHONPATH (default: .whl; carry
                       ml_collections there: pip download ml_collections --no-deps -d .whl)
  --tiny               every case on tests/tiny_train_config.py at small sizes, on
                       whatever device JAX has (tests the script on CPU; not a benchmark)
  --overwrite          replace the results an earlier run left in --out
  --dry-run            print the commands instead of running them
  -h, --help           this help

The interpreter is \$PYTHON (default: python). Run from the repository root.
USAGE
}

OUT=runs/gpu_benchmark
ONLY=""
SMOKE_ONLY=0
TOTAL=720
STEPS=5
REMAT=0
PROFILE=0
MEM_FRACTION=0.92
AUTOTUNE=4
COMPILE_CACHE=1
WHEELS=.whl
TINY=0
OVERWRITE=0
DRY_RUN=0
PY=${PYTHON:-$(command -v python || command -v python3 || echo python)}

while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --out) need_value "$1" $#; OUT=$2; shift 2 ;;
    --only) need_value "$1" $#; ONLY=$2; shift 2 ;;
    --smoke-only) SMOKE_ONLY=1; shift ;;
    --budget)
      need_value "$1" $#
      [[ $2 =~ ^([a-z0-9_]+)=([0-9]+)$ && -n ${BUDGET[${BASH_REMATCH[1]}]:-} ]] \
        || die "--budget takes CASE=SECONDS with CASE one of: preflight smoke ${CASES[*]}; got '$2'"
      BUDGET[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
      shift 2 ;;
    --total) need_value "$1" $#; TOTAL=$2; shift 2 ;;
    --steps) need_value "$1" $#; STEPS=$2; shift 2 ;;
    --remat) REMAT=1; shift ;;
    --profile) PROFILE=1; shift ;;
    --mem-fraction) need_value "$1" $#; MEM_FRACTION=$2; shift 2 ;;
    --autotune-level) need_value "$1" $#; AUTOTUNE=$2; shift 2 ;;
    --no-compile-cache) COMPILE_CACHE=0; shift ;;
    --wheels) need_value "$1" $#; WHEELS=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --overwrite) OVERWRITE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) die "unknown argument '$1' (see -h)" ;;
  esac
done

[[ $TOTAL =~ ^[1-9][0-9]*$ ]] || die "--total must be whole seconds, got '$TOTAL'"
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive whole number, got '$STEPS'"
check_mem_fraction "$MEM_FRACTION"
check_xla_gpu_args "$AUTOTUNE" true
[[ -f asrth_jax/benchmark.py ]] || die "run from the repository root (no asrth_jax/benchmark.py here)"
command -v timeout >/dev/null || die "needs 'timeout' (GNU coreutils) to hold each case to its budget"

# Two halves for machines that limit one command to 10 minutes: each fits in one, and
# each has the matmul ceiling (seconds) its MFU is read against.
declare -A CASE_GROUPS=([train]="vox_b32 vox_max hdtf512_b4 matmul_bf16"
                   [inference]="animate_512_bf16 animate_512_fp32 animate_256_bf16 animate_256_fp32 torch_reference matmul_bf16")
SELECTED=("${CASES[@]}")
if [[ -n $ONLY ]]; then
  IFS=, read -r -a asked <<<"$ONLY"
  SELECTED=()
  for case_name in "${asked[@]}"; do
    if [[ -n ${CASE_GROUPS[$case_name]:-} ]]; then
      read -r -a group <<<"${CASE_GROUPS[$case_name]}"
      SELECTED+=("${group[@]}")
      continue
    fi
    [[ " ${CASES[*]} " == *" $case_name "* ]] \
      || die "--only: unknown case '$case_name' (cases: ${CASES[*]}; groups: train, inference)"
    SELECTED+=("$case_name")
  done
  # Always in the order above, whatever the order asked.
  wanted=" ${SELECTED[*]} "
  SELECTED=()
  for case_name in "${CASES[@]}"; do
    [[ $wanted == *" $case_name "* ]] && SELECTED+=("$case_name")
  done
fi
((SMOKE_ONLY)) && SELECTED=()

# Refuse before any compile: a rerun must not silently replace the last run's figures.
if ((!OVERWRITE)); then
  for case_name in smoke "${SELECTED[@]}" summary; do
    [[ -e $OUT/$case_name.json ]] \
      && die "$OUT/$case_name.json exists from an earlier run; pass --overwrite or another --out"
  done
fi

# Where each case's model comes from; --tiny points every case at the test config.
if ((TINY)); then
  VOX=tests/tiny_train_config.py HDTF=tests/tiny_train_config.py
  VOX_BATCH=2 MAX_BATCH=4 HDTF_BATCH=2 ANIMATE_BATCHES=1,2
  TORCH_ARGS=(--model tiny --sizes 32 --batches "1,2" --device cpu)
  MATMUL_SIZE=256 BACKEND_ARGS=()
else
  VOX=configs/vox.py HDTF=configs/hdtf_512.py
  VOX_BATCH=32 MAX_BATCH=0 HDTF_BATCH=4 ANIMATE_BATCHES=1,8
  TORCH_ARGS=(--model released --sizes "512,256" --batches "1,8" --device cuda)
  MATMUL_SIZE=8192 BACKEND_ARGS=(--backend gpu)
fi

# The smoke step only has to run: no autotuning, so its compile stays short.
SMOKE_XLA_FLAGS="$(xla_gpu_flags 0 true 0 "")${XLA_FLAGS:+ $XLA_FLAGS}"
ENV=(env "XLA_FLAGS=$(xla_gpu_flags "$AUTOTUNE" true 0 "")${XLA_FLAGS:+ $XLA_FLAGS}"
     "XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION" PYTHONUNBUFFERED=1)
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
if ((${#wheels[@]})); then
  wheel_path=$(IFS=:; echo "${wheels[*]}")
  ENV+=("PYTHONPATH=$wheel_path${PYTHONPATH:+:$PYTHONPATH}")
fi

# The command of one case, in CMD.
case_command() {
  local name=$1 bench=("$PY" -m asrth_jax.benchmark) common
  common=(--steps "$STEPS" --out "$OUT/$name.json")
  ((OVERWRITE)) && common+=(--overwrite)
  ((COMPILE_CACHE)) || common+=(--no-compile-cache)
  local train=(--dtype bfloat16 --skip-inference)
  ((REMAT)) && train+=(--remat)
  ((PROFILE)) && train+=(--profile "${TMPDIR:-/tmp}/asrth_profile_$name")
  case $name in
    preflight) CMD=("$PY" -m asrth_jax.benchmark_suite preflight --torch "${BACKEND_ARGS[@]}") ;;
    smoke) CMD=("${bench[@]}" --config tests/tiny_train_config.py --batch 2 --steps 1
                --skip-inference --out "$OUT/smoke.json")
           ((OVERWRITE)) && CMD+=(--overwrite)
           ((COMPILE_CACHE)) || CMD+=(--no-compile-cache) ;;
    vox_b32) CMD=("${bench[@]}" --config "$VOX" --batch "$VOX_BATCH" "${train[@]}" "${common[@]}") ;;
    vox_max) CMD=("${bench[@]}" --config "$VOX" --batch "$MAX_BATCH" "${train[@]}" "${common[@]}")
             ((MAX_BATCH == 0)) && CMD+=(--plan-from "$OUT/vox_b32.json") ;;
    hdtf512_b4) CMD=("${bench[@]}" --config "$HDTF" --batch "$HDTF_BATCH" "${train[@]}" "${common[@]}") ;;
    animate_*)
      local size=${name#animate_} dtype config
      dtype=${size#*_} size=${size%_*}
      [[ $dtype == bf16 ]] && dtype=bfloat16 || dtype=float32
      [[ $size == 512 ]] && config=$HDTF || config=$VOX
      CMD=("${bench[@]}" --config "$config" --inference-only --dtype "$dtype"
           --inference-batches "$ANIMATE_BATCHES" "${common[@]}") ;;
    torch_reference) CMD=("$PY" tests/torch_reference_benchmark.py "${TORCH_ARGS[@]}"
                          --dtypes "bfloat16,float32" --steps "$STEPS" --out "$OUT/$name.json") ;;
    matmul_bf16) CMD=("${bench[@]}" --matmul-only --matmul-size "$MATMUL_SIZE"
                      --matmul-dtype bfloat16 "${common[@]}") ;;
  esac
}

START=$SECONDS
# Runs one case under min(its budget, what is left of --total); logs to OUT/<case>.log,
# records it in OUT/summary.json. Returns the case's exit status.
run_case() {
  local name=$1 budget=${BUDGET[$1]} left status=ok code=0 began
  left=$((TOTAL - (SECONDS - START)))
  ((budget > left)) && budget=$left
  case_command "$name"
  local env=("${ENV[@]}")
  [[ $name == smoke ]] && env[1]="XLA_FLAGS=$SMOKE_XLA_FLAGS"
  local cmd=(timeout --kill-after=10 "$budget" "${env[@]}" "${CMD[@]}")
  if ((DRY_RUN)); then
    print_cmd "${cmd[@]}"
    return 0
  fi
  if ((left < 10)); then
    log "$name skipped: ${left}s of the --total ${TOTAL}s left"
    record "$name" skipped 0 0 "$budget" "--total spent"
    return 0
  fi
  local gate=0
  [[ $name == preflight || $name == smoke ]] && gate=1
  ((gate)) || log "$name (budget ${budget}s)"
  began=$SECONDS
  "${cmd[@]}" >"$OUT/$name.log" 2>&1 || code=$?
  ((code == 0)) || status=failed
  ((code == 124 || code == 137)) && status=timed_out
  [[ $name == torch_reference ]] && grep -q '^reference skipped' "$OUT/$name.log" && status=skipped
  [[ $name == preflight ]] || record "$name" "$status" "$code" "$((SECONDS - began))" "$budget" ""
  # A gate that fails says so in the one line the caller dies with.
  ((gate && code)) && return "$code"
  # The benchmark's last line is its whole JSON; the line before says more in a log.
  log "$name: $status after $((SECONDS - began))s; $(grep -v '^{' "$OUT/$name.log" | tail -n 1 | cut -c1-300)"
  return "$code"
}

record() {
  "${ENV[@]}" "$PY" -m asrth_jax.benchmark_suite record "$OUT" --case "$1" --status "$2" \
    --exit-code "$3" --wall-s "$4" --budget-s "$5" --note "$6" \
    || log "could not update $OUT/summary.json"
}

run mkdir -p "$OUT"
((OVERWRITE && !DRY_RUN)) && rm -f "$OUT/summary.json"  # this run's cases only
code=0
run_case preflight || code=$?
((code == 0)) || die "preflight failed: $(tail -n 1 "$OUT/preflight.log" | sed 's/^error: //')"
run_case smoke || code=$?
((code == 0)) || die "smoke step failed (exit $code, budget ${BUDGET[smoke]}s): $(grep -v '^\[benchmark' "$OUT/smoke.log" | tail -n 1 | cut -c1-300) (log: $OUT/smoke.log)"
for case_name in "${SELECTED[@]}"; do
  run_case "$case_name" || true
done
((DRY_RUN)) || "${ENV[@]}" "$PY" -m asrth_jax.benchmark_suite table "$OUT" >&2 || true
