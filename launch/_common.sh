# shellcheck shell=bash
# Helpers shared by the launch/*.sh scripts (sourced, never executed).
#
#   DRY_RUN=1 -> `run` prints each command, shell-quoted and prefixed by "+ ",
#                instead of executing it. The printed line can be pasted into a
#                shell, and tests parse it with Python's shlex.split.

# Quote one word so that bash (and shlex.split) read it back unchanged.
# Plain words stay bare; anything else is single-quoted.
shquote() {
  local s=$1
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=,@%+^-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# Join all arguments into one shell-quoted command line.
shjoin() {
  local out="" a
  for a in "$@"; do
    out+="${out:+ }$(shquote "$a")"
  done
  printf '%s' "$out"
}

print_cmd() {
  printf '+ %s\n' "$(shjoin "$@")"
}

# Run a command, or print it when DRY_RUN=1.
run() {
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    print_cmd "$@"
  else
    "$@"
  fi
}

log() {
  printf '[%s] %s\n' "${LOG_TAG:-launch}" "$*" >&2
}

die() {
  printf '%s: error: %s\n' "${LOG_TAG:-launch}" "$*" >&2
  exit 2
}

# Fail with a one-line error when a flag that needs a value has none.
need_value() {
  local flag=$1 nargs=$2
  ((nargs >= 2)) || die "$flag needs a value (see -h)"
}

# XLA:GPU flags for this model; what each one does is written out in
# launch/gpu_node.sh. Arguments: autotune level (0-5), triton gemm (true|false),
# deterministic (0|1), per-fusion autotune cache dir ("" for none).
xla_gpu_flags() {
  local level=$1 triton=$2 deterministic=$3 cache=$4
  local f="--xla_gpu_enable_latency_hiding_scheduler=true"
  f+=" --xla_gpu_enable_triton_gemm=$triton"
  f+=" --xla_gpu_autotune_level=$level"
  [[ $deterministic == 1 ]] && f+=" --xla_gpu_deterministic_ops=true"
  [[ -n $cache ]] && f+=" --xla_gpu_per_fusion_autotune_cache_dir=$cache"
  printf '%s' "$f"
}

# Validate the values xla_gpu_flags takes; die with one line otherwise.
check_xla_gpu_args() {
  local level=$1 triton=$2
  [[ $level =~ ^[0-5]$ ]] || die "autotune level must be 0..5, got '$level'"
  [[ $triton == true || $triton == false ]] || die "triton gemm must be true or false, got '$triton'"
}

# Validate an XLA_PYTHON_CLIENT_MEM_FRACTION value; die with one line otherwise.
check_mem_fraction() {
  [[ $1 =~ ^(0?\.[0-9]+|1(\.0*)?)$ ]] || die "--mem-fraction must be in (0, 1], got '$1'"
}
