"""The modules split out of the train step (issue 29 item 3): the train state nested per
network, shardings found through it, the process barrier on public API, and what the
step and the config check import. Small subprocesses, no network compile."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
from train_helpers import REPO

from asrth_jax.train_state import NetworkState, TrainState


def _toy_state(leaf) -> TrainState:
    def network(width: int) -> NetworkState:
        params = {"conv": {"kernel": leaf((3, width))}}
        return NetworkState(params=params, rest={"bn": {"mean": leaf((width,))}},
                            opt=optax.adam(1e-3).init(params))

    return TrainState(step=leaf(()), rng=leaf((2,)), generator_side=network(4),
                      discriminator=network(6))


def test_networks_are_found_by_type_in_field_order_on_any_tree_of_the_state():
    state = _toy_state(np.zeros)
    assert list(state.networks()) == ["generator_side", "discriminator"]
    assert state.networks()["discriminator"] is state.discriminator
    as_strings = jax.tree.map(str, state)  # a tree of other leaves: the same networks
    assert list(as_strings.networks()) == ["generator_side", "discriminator"]


SHARDINGS = """
import json, jax, numpy as np, optax
from test_train_modules import _toy_state
from asrth_jax import sharding
mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, 2), sharding.MESH_AXES)
abstract = _toy_state(lambda shape: jax.ShapeDtypeStruct(shape, np.float32))
specs = jax.tree.map(lambda s: str(s.spec), sharding.state_shardings(abstract, mesh, True))
print(json.dumps({"step": specs.step,
                  **{f"{name}.{part}": sorted(set(jax.tree.leaves(getattr(net, part))))
                     for name, net in specs.networks().items()
                     for part in ("params", "rest", "opt")}}))
"""


def test_each_networks_parameters_and_moments_shard_over_fsdp_and_the_rest_replicates(
        jax_env):
    env = dict(jax_env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", SHARDINGS], env=env, cwd=REPO / "tests",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    specs = json.loads(out.stdout.splitlines()[-1])
    sharded, replicated = "P(None, 'fsdp')", "P()"
    assert specs.pop("step") == replicated
    for name in ("generator_side", "discriminator"):
        assert specs[f"{name}.params"] == [sharded]
        assert specs[f"{name}.rest"] == [replicated]  # though (4,) and (6,) would split
        # Adam's moments follow their parameters; its step count is a scalar.
        assert specs[f"{name}.opt"] == [replicated, sharded]


BARRIER = """
import sys, time, jax
from asrth_jax import sharding
port, index = sys.argv[1], int(sys.argv[2])
jax.distributed.initialize(f"127.0.0.1:{port}", 2, index)
if index == 1:
    time.sleep(3.0)
start = time.time()
sharding.process_barrier("test_barrier", timeout_s=120)
print(f"waited {time.time() - start:.2f}")
jax.distributed.shutdown()
"""


def test_process_barrier_holds_each_process_until_the_other_arrives(jax_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = [subprocess.Popen([sys.executable, "-c", BARRIER, str(port), str(index)],
                                  env=jax_env, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for index in range(2)]
    waited = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr[-2000:]
        waited.append(float(stdout.split()[-1]))
    assert waited[0] > 2.0 and waited[1] < 2.0, waited  # process 0 waited for the late one


def _modules_loaded_by(code: str, env: dict) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_step_does_not_load_the_renderer_nor_the_config_check_the_step(jax_env):
    step = _modules_loaded_by("import asrth_jax.train_step", jax_env)
    assert "data_pipelines.coordinates" in step
    assert not {"data_pipelines.synthetic", "cv2"} & step
    check = _modules_loaded_by(
        "from asrth_jax import config_lib\n"
        "config = config_lib.load_config_file('tests/tiny_train_config.py')\n"
        "config_lib.validate(config)", jax_env)
    assert "asrth_jax.teachers" in check and "asrth_jax.train_step" not in check
