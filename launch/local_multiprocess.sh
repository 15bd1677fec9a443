#!/usr/bin/env bash
# Run N training processes on this machine, each with D CPU devices, joined by
# jax.distributed (multi-controller JAX over gloo CPU collectives). This is the
# cheapest way to exercise the multi-host code paths (process-local data
# loading, global arrays, checkpoint coordination) without a pod.
#
# Each process I runs, with JAX_PLATFORMS=cpu and
# XLA_FLAGS=--xla_force_host_platform_device_count=D:
#   python -m asrth_jax.train TRAIN_ARGS --config.cpu_collectives=gloo \
#       --coordinator_address 127.0.0.1:PORT --num_processes N --process_id I
# Process 0 hosts the coordinator on a free port. Output goes to
# LOGDIR/process_I.log. The script waits for all processes; as soon as one
# fails it stops the others and exits with that process's status.
set -euo pipefail

LOG_TAG=local_mp
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<USAGE
Usage: launch/local_multiprocess.sh N [options] [-- TRAIN_ARGS...]

Start N processes of python -m asrth_jax.train on this machine (CPU devices,
gloo collectives, coordinator on 127.0.0.1), wait for all, fail if any fails.

Options:
  --devices-per-process D  CPU devices per process (default: 1)
  --logdir DIR             where process_I.log go (default: WORKDIR/logs)
  --port PORT              coordinator port (default: a free port)
  --timeout SECONDS        kill every process after this long (default: none)
  --dry-run                print the N commands instead of running them
  -h, --help               this help

TRAIN_ARGS default to --config configs/demo.py --workdir runs/local_mp; a
--config or --workdir among them replaces the default, other arguments are
added. Run from the repository root. The interpreter is \$PYTHON (default: python).
USAGE
}

NUM_PROCS=""
DEVICES=1
LOGDIR=""
PORT=""
TIMEOUT=""
DRY_RUN=0
TRAIN_ARGS=()

while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --devices-per-process) need_value "$1" $#; DEVICES=$2; shift 2 ;;
    --logdir) need_value "$1" $#; LOGDIR=$2; shift 2 ;;
    --port) need_value "$1" $#; PORT=$2; shift 2 ;;
    --timeout) need_value "$1" $#; TIMEOUT=$2; shift 2 ;;
    --devices-per-process=*|--logdir=*|--port=*|--timeout=*)
      k=${1%%=*}; set -- "$k" "${1#*=}" "${@:2}" ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    -*) die "unknown argument '$1' (train arguments go after --; see -h)" ;;
    *)
      [[ -z $NUM_PROCS ]] || die "unexpected argument '$1' (N is already $NUM_PROCS; train arguments go after --)"
      NUM_PROCS=$1; shift ;;
  esac
done

[[ -n $NUM_PROCS ]] || die "missing N, the number of processes (see -h)"
[[ $NUM_PROCS =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$NUM_PROCS'"
[[ $DEVICES =~ ^[1-9][0-9]*$ ]] || die "--devices-per-process must be a positive integer, got '$DEVICES'"
[[ -z $TIMEOUT || $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds, got '$TIMEOUT'"
[[ -z $PORT || ($PORT =~ ^[1-9][0-9]*$ && PORT -lt 65536) ]] || die "--port must be 1..65535, got '$PORT'"

PYTHON=${PYTHON:-python}

# Fill in --config/--workdir unless given (absl: --flag VALUE or --flag=VALUE;
# --config.key=value overrides do not count).
have_config=0 have_workdir=0 WORKDIR=""
for ((i = 0; i < ${#TRAIN_ARGS[@]}; i++)); do
  a=${TRAIN_ARGS[i]}
  case $a in
    --config|--config=*) have_config=1 ;;
    --workdir) have_workdir=1; WORKDIR=${TRAIN_ARGS[i + 1]:-} ;;
    --workdir=*) have_workdir=1; WORKDIR=${a#--workdir=} ;;
  esac
done
DEFAULTS=()
((have_config)) || DEFAULTS+=(--config configs/demo.py)
if ((!have_workdir)); then
  WORKDIR=runs/local_mp
  DEFAULTS+=(--workdir "$WORKDIR")
fi
[[ -n $WORKDIR ]] || die "--workdir needs a value"
if [[ -z $LOGDIR ]]; then
  [[ $WORKDIR != *://* ]] || die "workdir '$WORKDIR' is remote; pass --logdir for the local logs"
  LOGDIR=$WORKDIR/logs
fi

if [[ -z $PORT ]]; then
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
    die "could not pick a free port with $PYTHON (pass --port)"
fi
COORD=127.0.0.1:$PORT

ENV=(JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES${XLA_FLAGS:+ $XLA_FLAGS}")
PREFIX=()
[[ -n $TIMEOUT ]] && PREFIX=(timeout --kill-after=10 "$TIMEOUT")

proc_cmd() {  # proc_cmd I -> CMD array
  # Config overrides must follow --config (absl parses left to right).
  CMD=("${PREFIX[@]}" env "${ENV[@]}" "$PYTHON" -m asrth_jax.train "${DEFAULTS[@]}"
       "${TRAIN_ARGS[@]}" --config.cpu_collectives=gloo
       --coordinator_address "$COORD" --num_processes "$NUM_PROCS" --process_id "$1")
}

if ((DRY_RUN)); then
  echo "# $NUM_PROCS processes x $DEVICES CPU device(s), coordinator $COORD, logs in $LOGDIR"
  for ((i = 0; i < NUM_PROCS; i++)); do
    proc_cmd "$i"
    printf '+ %s > %s 2>&1 &\n' "$(shjoin "${CMD[@]}")" "$(shquote "$LOGDIR/process_$i.log")"
  done
  exit 0
fi

mkdir -p "$LOGDIR"
declare -A INDEX=()   # pid -> process index
PIDS=()

stop_all() {  # TERM every process still running, KILL after 10 s
  local pid t
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((t = 0; t < 100; t++)); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
forget() {  # forget PID: drop it from PIDS
  local pid keep=()
  for pid in "${PIDS[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
  PIDS=("${keep[@]}")
}
trap 'log "interrupted; stopping all processes"; stop_all; exit 130' INT TERM
trap 'stop_all' EXIT  # never leave processes behind, whatever ends the script

log "$NUM_PROCS processes x $DEVICES CPU device(s), coordinator $COORD, logs in $LOGDIR"
for ((i = 0; i < NUM_PROCS; i++)); do
  proc_cmd "$i"
  "${CMD[@]}" > "$LOGDIR/process_$i.log" 2>&1 &
  PIDS+=("$!")
  INDEX[$!]=$i
done

for ((left = NUM_PROCS; left > 0; left--)); do
  done_pid=""
  if wait -n -p done_pid "${PIDS[@]}"; then rc=0; else rc=$?; fi
  [[ -n $done_pid ]] || { log "error: lost track of the processes (wait returned $rc)"; stop_all; exit 1; }
  i=${INDEX[$done_pid]}
  if ((rc != 0)); then
    log "process $i failed with exit status $rc; stopping the others. Last lines of $LOGDIR/process_$i.log:"
    tail -n 20 "$LOGDIR/process_$i.log" >&2 || true
    forget "$done_pid"
    stop_all
    exit "$rc"
  fi
  log "process $i finished"
  forget "$done_pid"
done
log "all $NUM_PROCS processes finished"
