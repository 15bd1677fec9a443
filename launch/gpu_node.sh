#!/usr/bin/env bash
# Train asrth_jax on one GPU node: one process, all local GPUs (single-controller
# JAX; the train loop shards the batch over jax.devices()). No
# jax.distributed.initialize() is needed or called.
#
# XLA settings this script exports, and why they matter for this model (a
# conv-heavy generator with 3D feature volumes and a grid-sample warp, ~176M
# float32 params trained data-parallel, so every step all-reduces ~704 MB of
# gradients over NVLink):
#
#   --xla_gpu_enable_latency_hiding_scheduler=true
#       Schedules the asynchronous gradient all-reduces (NCCL) so that they run
#       while the rest of the backward pass is still computing, instead of all
#       at the end of the step. This is the single most useful flag for
#       data-parallel training on several GPUs.
#   --xla_gpu_enable_triton_gemm=true|false            (--triton-gemm; XLA default true)
#       Lets the autotuner use Triton-generated kernels (with fused prologues/
#       epilogues) for matmuls instead of only cuBLAS. Convolutions go to cuDNN
#       either way, and this model is convolution-bound, so `false` mostly
#       trades a little speed on the dense/1x1 layers for shorter compiles;
#       measure both.
#   --xla_gpu_autotune_level=N                          (--autotune-level; XLA default 4)
#       How hard XLA autotunes GEMM and convolution algorithms: 0 = off,
#       1 = on, 2 = + initialise buffers, 3 = + reinitialise between runs,
#       4 = + check results against a reference, 5 = 4 and skip wrong results.
#       Keep 4 for real runs; 0 compiles much faster for debugging, at a cost
#       in step time.
#   --xla_gpu_deterministic_ops=true                    (--deterministic; off by default)
#       Bit-reproducible runs: picks deterministic conv algorithms and avoids
#       atomics in scatters (the backward of the warp's gather is a
#       scatter-add). Slower; use it for debugging divergence, not for training.
#   --xla_gpu_per_fusion_autotune_cache_dir=DIR        (--autotune-cache DIR; experimental)
#       Saves autotuning results per fusion and reuses them on later runs, which
#       cuts compile time when restarting a job. Invalidate it (empty the
#       directory) after upgrading jaxlib or changing GPU type.
#   XLA_PYTHON_CLIENT_MEM_FRACTION=0.90                 (--mem-fraction; JAX default 0.75)
#       Fraction of each GPU's memory JAX preallocates. The 512x512 config with
#       its 3D feature volumes needs more than the default 75%; leave ~10% for
#       cuDNN/cuBLAS workspaces and NCCL buffers.
#
# Any XLA_FLAGS already in the environment are appended after these, so they
# win (XLA takes the last value of a repeated flag).
set -euo pipefail

LOG_TAG=gpu_node
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
Usage: launch/gpu_node.sh [options] [-- TRAIN_ARGS...]

Train on all GPUs of this machine with one process (see the comments at the
top of this script for what each XLA setting does).

Options:
  --config PATH          train config (default: configs/vox.py)
  --workdir DIR          checkpoints and summaries (default: runs/gpu_node;
                         gs:// paths work too)
  --gpus LIST            restrict to these GPUs (sets CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3)
  --mem-fraction F       XLA_PYTHON_CLIENT_MEM_FRACTION (default: 0.90)
  --autotune-level N     --xla_gpu_autotune_level, 0..5 (default: 4)
  --triton-gemm BOOL     --xla_gpu_enable_triton_gemm, true|false (default: true)
  --autotune-cache DIR   --xla_gpu_per_fusion_autotune_cache_dir (created if missing)
  --deterministic        --xla_gpu_deterministic_ops=true
  --dry-run              print the command instead of running it
  -h, --help             this help

Everything after -- is passed to python -m asrth_jax.train. The interpreter is
\$PYTHON (default: python).
USAGE
}

CONFIG=configs/vox.py
WORKDIR=runs/gpu_node
GPUS=""
MEM_FRACTION=0.90
AUTOTUNE=4
TRITON=true
CACHE=""
DETERMINISTIC=0
DRY_RUN=0
TRAIN_ARGS=()

while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --config) need_value "$1" $#; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$1" $#; WORKDIR=$2; shift 2 ;;
    --gpus) need_value "$1" $#; GPUS=$2; shift 2 ;;
    --mem-fraction) need_value "$1" $#; MEM_FRACTION=$2; shift 2 ;;
    --autotune-level) need_value "$1" $#; AUTOTUNE=$2; shift 2 ;;
    --triton-gemm) need_value "$1" $#; TRITON=$2; shift 2 ;;
    --autotune-cache) need_value "$1" $#; CACHE=$2; shift 2 ;;
    --config=*|--workdir=*|--gpus=*|--mem-fraction=*|--autotune-level=*|--triton-gemm=*|--autotune-cache=*)
      k=${1%%=*}; set -- "$k" "${1#*=}" "${@:2}" ;;
    --deterministic) DETERMINISTIC=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) die "unknown argument '$1' (train arguments go after --; see -h)" ;;
  esac
done

check_xla_gpu_args "$AUTOTUNE" "$TRITON"
check_mem_fraction "$MEM_FRACTION"
[[ -z $GPUS || $GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must be a comma-separated list of GPU indices, got '$GPUS'"

FLAGS=$(xla_gpu_flags "$AUTOTUNE" "$TRITON" "$DETERMINISTIC" "$CACHE")
[[ -n ${XLA_FLAGS:-} ]] && FLAGS+=" $XLA_FLAGS"

ENV=(XLA_FLAGS="$FLAGS" XLA_PYTHON_CLIENT_MEM_FRACTION="$MEM_FRACTION")
[[ -n $GPUS ]] && ENV+=(CUDA_VISIBLE_DEVICES="$GPUS")

if ((!DRY_RUN)); then
  [[ -n $CACHE ]] && mkdir -p "$CACHE"
  if command -v nvidia-smi >/dev/null; then
    log "GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | sed 's/^ *//' | paste -sd ';' -)"
  else
    log "warning: nvidia-smi not found; JAX may fall back to CPU"
  fi
fi
run env "${ENV[@]}" "${PYTHON:-python}" -m asrth_jax.train --config "$CONFIG" --workdir "$WORKDIR" "${TRAIN_ARGS[@]}"
