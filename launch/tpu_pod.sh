#!/usr/bin/env bash
# Train asrth_jax on a multi-host Cloud TPU VM slice (multi-controller JAX).
#
# Steps (each gcloud call gets --zone, and --project when one is known):
#   1. create   gcloud compute tpus tpu-vm describe NAME, and if that fails
#               gcloud compute tpus tpu-vm create NAME --accelerator-type --version
#               (an existing TPU is reused; its accelerator type must match)
#   2. copy     git archive REF -> tarball; tpu-vm scp --worker=all
#   3. install  tpu-vm ssh --worker=all: unpack to ~/asrth_jax, create
#               ~/asrth_venv with uv (TPU runtime images ship Python 3.10, the
#               package needs >= 3.11), `pip install -e . jax[tpu]`
#   4. train    tpu-vm ssh --worker=all: the same command on every host at once:
#               python -m asrth_jax.train --config CONFIG --workdir gs://... --distributed ARGS
#               --distributed makes train call jax.distributed.initialize() with no
#               arguments; on a TPU VM JAX finds the coordinator, process count and
#               process id from the TPU metadata server.
#
# The workdir must be a gs:// path: every host writes to it, and each TPU VM's
# local disk is private to that host and deleted with the TPU. Orbax
# checkpointing (via tensorstore) and the TensorBoard summary writer (via
# tf.io.gfile) both take gs:// paths directly; the TPU VM's service account
# needs read/write access to the bucket (roles/storage.objectAdmin).
# View the curves with:  tensorboard --logdir gs://BUCKET/PATH
set -euo pipefail

LOG_TAG=tpu_pod
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<USAGE
Usage: launch/tpu_pod.sh [options] [-- TRAIN_ARGS...]

Create (or reuse) a Cloud TPU VM slice, copy this repository to every worker,
install it, and start training on all workers with --distributed.

Options:
  --name NAME              TPU name (default: asrth-\$USER)
  --zone ZONE              zone (default: us-east5-a)
  --accelerator-type TYPE  e.g. v5p-32, v5p-64, v5litepod-16, v4-32, v6e-16
                           (default: v5p-32)
  --version RUNTIME        TPU software version (default: from the accelerator:
                           v5p -> v2-alpha-tpuv5, v5litepod -> v2-alpha-tpuv5-lite,
                           v6e -> v2-alpha-tpuv6e, v4 -> tpu-ubuntu2204-base)
  --project PROJECT        GCP project (default: \$CLOUDSDK_CORE_PROJECT or
                           \$GOOGLE_CLOUD_PROJECT; if unset, gcloud's own default)
  --spot                   create the TPU as a Spot VM
  --config PATH            train config (default: configs/vox.py)
  --workdir gs://B/P       shared workdir for checkpoints and summaries
                           (default: gs://\$GCS_BUCKET/asrth_jax/NAME if GCS_BUCKET is set)
  --ref REF                git ref to ship (default: HEAD; uncommitted changes
                           are not shipped)
  --python VERSION         Python for the worker venv (default: 3.11)
  --skip-create            the TPU exists; do not describe/create it
  --skip-install           code is already installed; only start training
  --detach                 run train under nohup on each worker (log in
                           ~/asrth_train.log) instead of streaming output
  --delete                 delete the TPU and exit (nothing else runs)
  --dry-run                print every command instead of running it
  -h, --help               this help

Everything after -- is passed to python -m asrth_jax.train, e.g.
  launch/tpu_pod.sh --zone us-east5-a --accelerator-type v5p-64 \\
      --workdir gs://my-bucket/runs/vox -- --config.train.num_steps=10
USAGE
}

NAME="asrth-${USER:-user}"
ZONE=us-east5-a
ACCEL=v5p-32
VERSION=""
PROJECT="${CLOUDSDK_CORE_PROJECT:-${GOOGLE_CLOUD_PROJECT:-}}"
SPOT=0
CONFIG=configs/vox.py
WORKDIR=""
REF=HEAD
PYVER=3.11
SKIP_CREATE=0
SKIP_INSTALL=0
DETACH=0
DELETE=0
DRY_RUN=0
TRAIN_ARGS=()

while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --name) need_value "$1" $#; NAME=$2; shift 2 ;;
    --zone) need_value "$1" $#; ZONE=$2; shift 2 ;;
    --accelerator-type) need_value "$1" $#; ACCEL=$2; shift 2 ;;
    --version) need_value "$1" $#; VERSION=$2; shift 2 ;;
    --project) need_value "$1" $#; PROJECT=$2; shift 2 ;;
    --config) need_value "$1" $#; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$1" $#; WORKDIR=$2; shift 2 ;;
    --ref) need_value "$1" $#; REF=$2; shift 2 ;;
    --python) need_value "$1" $#; PYVER=$2; shift 2 ;;
    --name=*|--zone=*|--accelerator-type=*|--version=*|--project=*|--config=*|--workdir=*|--ref=*|--python=*)
      k=${1%%=*}; set -- "$k" "${1#*=}" "${@:2}" ;;
    --spot) SPOT=1; shift ;;
    --skip-create) SKIP_CREATE=1; shift ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --detach) DETACH=1; shift ;;
    --delete) DELETE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) die "unknown argument '$1' (train arguments go after --; see -h)" ;;
  esac
done

[[ -n $NAME ]] || die "--name must not be empty"
[[ -n $ZONE ]] || die "--zone must not be empty"

if [[ -z $VERSION ]]; then
  case $ACCEL in
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v4-*) VERSION=tpu-ubuntu2204-base ;;
    *) die "no default runtime for --accelerator-type '$ACCEL'; pass --version" ;;
  esac
fi

GC=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[[ -n $PROJECT ]] && LOC+=(--project="$PROJECT")

if ((DELETE)); then
  run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet
  exit 0
fi

if [[ -z $WORKDIR ]]; then
  [[ -n ${GCS_BUCKET:-} ]] || die "--workdir gs://BUCKET/PATH is required (or set GCS_BUCKET)"
  WORKDIR="gs://${GCS_BUCKET#gs://}/asrth_jax/$NAME"
fi
[[ $WORKDIR == gs://?* ]] || die "--workdir must be a gs:// path shared by all TPU hosts, got '$WORKDIR'"

# 1. Create or reuse the slice.
if ((!SKIP_CREATE)); then
  CREATE=("${GC[@]}" create "$NAME" "${LOC[@]}" --accelerator-type="$ACCEL" --version="$VERSION")
  ((SPOT)) && CREATE+=(--spot)
  if ((DRY_RUN)); then
    print_cmd "${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(acceleratorType)'
    echo "# only if describe fails (no TPU named $NAME yet):"
    print_cmd "${CREATE[@]}"
  elif have=$("${GC[@]}" describe "$NAME" "${LOC[@]}" --format='value(acceleratorType)' 2>/dev/null); then
    # The API may report the type as a full path; compare its last component.
    [[ ${have##*/} == "$ACCEL" ]] ||
      die "TPU '$NAME' exists with accelerator type '${have##*/}', not '$ACCEL' (use --name or --delete)"
    log "reusing existing TPU $NAME ($ACCEL in $ZONE)"
  else
    log "creating TPU $NAME ($ACCEL, runtime $VERSION, zone $ZONE)"
    "${CREATE[@]}"
  fi
fi

# 2.-3. Ship the code and install it on every worker.
if ((!SKIP_INSTALL)); then
  if ((!DRY_RUN)) && ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null && [[ $REF == HEAD ]]; then
    log "warning: uncommitted changes in $ROOT are not shipped (git archive $REF)"
  fi
  TARBALL="${TMPDIR:-/tmp}/asrth_jax-$NAME.tar.gz"
  run git -C "$ROOT" archive --format=tar.gz --prefix=asrth_jax/ -o "$TARBALL" "$REF"
  run "${GC[@]}" scp "$TARBALL" "$NAME:asrth_jax.tar.gz" --worker=all "${LOC[@]}"
  # One line, so that --dry-run prints one line per command.
  INSTALL="set -euo pipefail; rm -rf ~/asrth_jax; tar -xzf ~/asrth_jax.tar.gz -C ~;"
  INSTALL+=" export PATH=\"\$HOME/.local/bin:\$HOME/.cargo/bin:\$PATH\";"
  INSTALL+=" command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh;"
  INSTALL+=" [ -x ~/asrth_venv/bin/python ] || uv venv --python $(shquote "$PYVER") ~/asrth_venv;"
  INSTALL+=" uv pip install --python ~/asrth_venv/bin/python -e ~/asrth_jax \"jax[tpu]\""
  run "${GC[@]}" ssh "$NAME" --worker=all "${LOC[@]}" --command="$INSTALL"
fi

# 4. Start the same train command on every worker at once.
TRAIN=(-m asrth_jax.train --config "$CONFIG" --workdir "$WORKDIR" --distributed "${TRAIN_ARGS[@]}")
# The remote shell expands ~, so it stays outside the quoted words.
REMOTE="cd ~/asrth_jax && ~/asrth_venv/bin/python $(shjoin "${TRAIN[@]}")"
if ((DETACH)); then
  REMOTE="cd ~/asrth_jax && nohup ~/asrth_venv/bin/python $(shjoin "${TRAIN[@]}") > ~/asrth_train.log 2>&1 < /dev/null &"
fi
((DRY_RUN)) || log "starting training on all workers of $NAME (workdir $WORKDIR)"
run "${GC[@]}" ssh "$NAME" --worker=all "${LOC[@]}" --command="$REMOTE"
