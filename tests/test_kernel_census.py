"""The kernel census: a compiled program's kernels, the distinct ones (XLA compiles an
identical kernel once), and the part of the model each comes from."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from asrth_jax import benchmark, kernel_census, losses


def _compiled_text(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def _chains(xs):
    return [jnp.tanh(x * 1.5 + 0.2) * jnp.sqrt(jnp.abs(x) + 1.0) for x in xs]


def test_identical_kernels_count_once_and_distinct_shapes_each():
    same = [jax.ShapeDtypeStruct((8, 8), jnp.float32)] * 6
    differ = [jax.ShapeDtypeStruct((8, 8 + i), jnp.float32) for i in range(6)]
    assert kernel_census.census(_compiled_text(_chains, same)) == {
        "kernels": 6, "distinct": 1, "distinct_conv_dot": 0,
        "by_part": {"unattributed": {"kernels": 6, "distinct": 1}}}
    counted = kernel_census.census(_compiled_text(_chains, differ))
    assert (counted["kernels"], counted["distinct"]) == (6, 6)


def test_convolutions_and_matmuls_are_counted_apart():
    def net(x, w, m):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(y).reshape(2, -1) @ m, jnp.tanh(x)

    spec = jax.ShapeDtypeStruct
    counted = kernel_census.census(_compiled_text(
        net, spec((2, 8, 8, 3), jnp.float32), spec((3, 3, 3, 4), jnp.float32),
        spec((256, 5), jnp.float32)))
    assert counted["distinct_conv_dot"] == 2 < counted["distinct"]


def test_kernels_inside_a_loop_body_are_counted():
    def loop(x):
        return jax.lax.fori_loop(0, 3, lambda i, y: jnp.tanh(y) * 2.0 + i, x)

    text = _compiled_text(loop, jax.ShapeDtypeStruct((16,), jnp.float32))
    assert " while(" in text
    assert kernel_census.census(text)["kernels"] >= 1


def test_a_kernel_belongs_to_the_package_file_that_made_it():
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    counted = kernel_census.census(_compiled_text(losses.l1_loss, x, x))
    assert set(counted["by_part"]) == {"losses"}
    assert sum(p["kernels"] for p in counted["by_part"].values()) == counted["kernels"]


@pytest.mark.parametrize(("files", "part"), [
    (["/x/optax/_src/update.py", "/r/asrth_jax/train_step.py"], "optimizer"),
    (["/r/asrth_jax/models/blocks.py", "/r/asrth_jax/models/warp.py",
      "/r/asrth_jax/models/dense_motion.py", "/r/asrth_jax/models/adasr.py",
      "/r/asrth_jax/train_step.py"], "dense_motion"),
    (["/r/asrth_jax/models/antialias.py", "/r/asrth_jax/losses.py"], "losses"),
    (["/x/flax/nnx/nn/linear.py"], "unattributed"),
    ([], "unattributed"),
])
def test_parts_skip_shared_layers_for_the_network_that_called_them(files, part):
    assert kernel_census.part_of(files) == part


def test_text_that_is_no_hlo_module_is_refused():
    with pytest.raises(ValueError, match="no ENTRY computation"):
        kernel_census.census("not a module")


def test_kernel_cost_compiles_identical_kernels_once():
    result = benchmark.kernel_cost(12)
    assert (result["kernel_cost_identical_kernels"], result["kernel_cost_identical_distinct"]) \
        == (12, 1)
    assert (result["kernel_cost_distinct_kernels"], result["kernel_cost_distinct_distinct"]) \
        == (12, 12)
    assert result["kernel_cost_per_distinct_s"] is not None


def test_kernel_cost_runs_alone():
    with pytest.raises(SystemExit, match="^error: --kernel-cost runs alone; drop --config"):
        benchmark.main(["--kernel-cost", "--config", "configs/demo.py"])
