"""The same global batch gives the same losses on 1 device and on 8 simulated devices:
a `data x fsdp` mesh with FSDP-sharded parameters (XLA partitions the global step) and
a `data` mesh with deterministic reductions (the step per device under `shard_map`,
every cross-device sum ordered). A file of its own so pytest-xdist runs it beside the
train-loop tests."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from train_helpers import CONFIG, REPO, assert_losses_equal

pytestmark = pytest.mark.slow

SHARDED_LOSSES = """
import json, sys
import jax, numpy as np
from asrth_jax import sharding
from asrth_jax.config_lib import load_config_file
from asrth_jax.train_step import TrainSetup
from data_pipelines.pipeline import make_train_loader
config = load_config_file(sys.argv[1])
batch = next(make_train_loader(config.data, seed=config.seed,
                               global_batch_size=config.train.global_batch_size))
results = {}
meshes = (("one_device", 1, 1, False, False), ("data_deterministic", 8, 1, False, True),
          ("data_fsdp", 4, 2, True, False))
for name, data, fsdp, shard_params, deterministic in meshes:
    with config.unlocked():
        config.mesh.data, config.mesh.fsdp, config.mesh.shard_params = data, fsdp, shard_params
        config.mesh.deterministic_reductions = deterministic
    devices = jax.devices()[: data * fsdp]
    trainer = TrainSetup(config, sharding.make_mesh(config.mesh, devices))
    state = trainer.init_state(config.seed)
    if shard_params:
        specs = {str(s.spec) for s in jax.tree.leaves(trainer.state_sharding)}
        assert any("fsdp" in s for s in specs), specs
    args = (state, trainer.shard_batch(batch), trainer.frozen_state)
    step = trainer.train_step.lower(*args).compile()
    if deterministic:  # every cross-device sum is an ordered all-gather sum
        hlo = step.as_text()
        results["collectives"] = {op: hlo.count(op + "(") for op in ("all-reduce", "all-gather")}
    state, metrics = step(*args)
    results[name] = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if name == "one_device":  # the periodic evaluation, on frames 0 and t > 0
        from asrth_jax.train import eval_data_config
        from data_pipelines.pipeline import make_eval_dataset
        eval_batch = make_eval_dataset(eval_data_config(config), batch_size=8)[0]
        at_t0 = (eval_batch["frame_index"][:, 1] == 0).astype(np.float32)
        for key, mask in (("eval_t0", at_t0), ("eval_t", 1.0 - at_t0)):
            sums = trainer.eval_step(state, trainer.shard_batch(eval_batch), mask)
            results[key] = {k: float(v) for k, v in jax.device_get(sums).items()}
print("RESULT" + json.dumps(results))
"""


def test_losses_equal_on_1_and_8_devices_with_data_and_fsdp_meshes(jax_env):
    env = dict(jax_env, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, "-c", SHARDED_LOSSES, CONFIG], env=env, check=True,
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    results = json.loads(out.stdout.split("RESULT", 1)[1])
    for name in ("data_deterministic", "data_fsdp"):
        assert_losses_equal(results[name], results["one_device"], rtol=1e-5)
    assert results["collectives"]["all-reduce"] == 0 and results["collectives"]["all-gather"]
    # Evaluation: at t = 0 the driver is the source, so the model's frame is its no-motion
    # frame and copy-source is exact; every reference is a real, finite number.
    t0, t = results["eval_t0"], results["eval_t"]
    assert t0["count"] == 2 and t["count"] == 6
    np.testing.assert_allclose(t0["model_l1"], t0["no_motion_l1"], rtol=1e-5)
    assert t0["copy_source_l1"] == 0.0 and t0["model_l1"] > 0.0
    # After one update the pose heads are no longer zero: at t > 0 the driving keypoints
    # move the source, so the model's frames are not its no-motion frames.
    assert t["model_l1"] != t["no_motion_l1"]
    for name in ("model", "copy_source", "no_motion"):
        assert 0.0 < t[f"{name}_l1"] / t["count"] < 1.0 and np.isfinite(t[f"{name}_ssim"])
