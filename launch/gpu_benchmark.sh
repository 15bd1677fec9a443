#!/usr/bin/env bash
# The scaling benchmark matrix on one accelerator: each config, with and without
# rematerialisation, at the largest batch XLA's memory plan fits, in bfloat16.
# Each case is one `python -m asrth_jax.benchmark` process (a fresh device memory
# pool per case) writing OUT/<case>.json and OUT/<case>.log; cases share one time
# budget so a slow compile cannot eat the whole lease. No-remat cases are also
# profiled (3 traced steps, summarised by asrth_jax.profile_summary).
set -euo pipefail

LOG_TAG=gpu_benchmark
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
Usage: launch/gpu_benchmark.sh [options]

Options:
  --out DIR           where the per-case JSON and logs go (default: runs/gpu_benchmark)
  --configs LIST      comma-separated configs (default: configs/vox.py,configs/hdtf_512.py)
  --remat MODE        off | on | both (default: both; 'off' runs first)
  --dtype DTYPE       bfloat16 | float32 (default: bfloat16)
  --batch N           global batch; 0 = largest that fits (default: 0)
  --budget SECONDS    wall-clock for all cases together (default: 1800)
  --steps N           timed steps per case (default: 5)
  --mem-fraction F    XLA_PYTHON_CLIENT_MEM_FRACTION (default: 0.92)
  --autotune-level N  --xla_gpu_autotune_level, 0..5 (default: 4)
  --overwrite         replace result files an earlier run left in --out
  --dry-run           print the commands instead of running them
  -h, --help          this help

The interpreter is \$PYTHON (default: python).
USAGE
}

OUT=runs/gpu_benchmark
CONFIGS=configs/vox.py,configs/hdtf_512.py
REMAT=both
DTYPE=bfloat16
BATCH=0
BUDGET=1800
STEPS=5
MEM_FRACTION=0.92
AUTOTUNE=4
DRY_RUN=0
OVERWRITE=0

while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --out) need_value "$1" $#; OUT=$2; shift 2 ;;
    --configs) need_value "$1" $#; CONFIGS=$2; shift 2 ;;
    --remat) need_value "$1" $#; REMAT=$2; shift 2 ;;
    --dtype) need_value "$1" $#; DTYPE=$2; shift 2 ;;
    --batch) need_value "$1" $#; BATCH=$2; shift 2 ;;
    --budget) need_value "$1" $#; BUDGET=$2; shift 2 ;;
    --steps) need_value "$1" $#; STEPS=$2; shift 2 ;;
    --mem-fraction) need_value "$1" $#; MEM_FRACTION=$2; shift 2 ;;
    --autotune-level) need_value "$1" $#; AUTOTUNE=$2; shift 2 ;;
    --overwrite) OVERWRITE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) die "unknown argument '$1' (see -h)" ;;
  esac
done

case $REMAT in
  off) MODES=(off) ;;
  on) MODES=(on) ;;
  both) MODES=(off on) ;;
  *) die "--remat must be off, on or both, got '$REMAT'" ;;
esac
[[ $DTYPE == bfloat16 || $DTYPE == float32 ]] || die "--dtype must be bfloat16 or float32, got '$DTYPE'"
[[ $BATCH =~ ^[0-9]+$ ]] || die "--batch must be a whole number (0 = largest that fits), got '$BATCH'"
[[ $BUDGET =~ ^[0-9]+$ ]] || die "--budget must be whole seconds, got '$BUDGET'"
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive whole number, got '$STEPS'"
check_mem_fraction "$MEM_FRACTION"
check_xla_gpu_args "$AUTOTUNE" true
IFS=, read -r -a CONFIG_LIST <<<"$CONFIGS"
for config in "${CONFIG_LIST[@]}"; do
  ((DRY_RUN)) || [[ -f $config ]] || die "config '$config' not found (run from the repository root)"
done

case_names=()
for config in "${CONFIG_LIST[@]}"; do
  for mode in "${MODES[@]}"; do
    case_names+=("$(basename "$config" .py)_${DTYPE}_remat-${mode}")
  done
done
# Refuse before any compile: a rerun must not silently replace the last run's figures.
if ((!OVERWRITE)); then
  for case_name in "${case_names[@]}"; do
    [[ -e $OUT/$case_name.json ]] \
      && die "$OUT/$case_name.json exists from an earlier run; pass --overwrite or another --out"
  done
fi

FLAGS=$(xla_gpu_flags "$AUTOTUNE" true 0 "")
[[ -n ${XLA_FLAGS:-} ]] && FLAGS+=" $XLA_FLAGS"
run mkdir -p "$OUT"
deadline=$((SECONDS + BUDGET))

for config in "${CONFIG_LIST[@]}"; do
  name=$(basename "$config" .py)
  first_mode=1
  for mode in "${MODES[@]}"; do
    case_name="${name}_${DTYPE}_remat-${mode}"
    args=(--config "$config" --dtype "$DTYPE" --batch "$BATCH" --steps "$STEPS"
          --out "$OUT/$case_name.json")
    [[ $mode == on ]] && args+=(--remat)
    ((OVERWRITE)) && args+=(--overwrite)
    [[ $mode == off ]] && args+=(--profile "${TMPDIR:-/tmp}/profile_$case_name")
    # Inference does not depend on remat: measure it once per config.
    ((first_mode)) || args+=(--skip-inference)
    first_mode=0
    left=$((deadline - SECONDS))
    if ((!DRY_RUN && left < 30)); then
      log "budget spent: skipping $case_name"
      continue
    fi
    cmd=(timeout "$left" env XLA_FLAGS="$FLAGS" XLA_PYTHON_CLIENT_MEM_FRACTION="$MEM_FRACTION"
         PYTHONUNBUFFERED=1 "${PYTHON:-python}" -m asrth_jax.benchmark "${args[@]}")
    if ((DRY_RUN)); then
      print_cmd "${cmd[@]}"
      continue
    fi
    log "$case_name (${left}s of budget left)"
    if "${cmd[@]}" >"$OUT/$case_name.log" 2>&1; then
      tail -n 1 "$OUT/$case_name.log" >&2
    else
      log "$case_name failed (exit $?); last lines of $OUT/$case_name.log:"
      tail -n 5 "$OUT/$case_name.log" >&2
    fi
  done

done

