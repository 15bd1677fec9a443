"""bfloat16 compute with float32 parameters, and rematerialisation as a pure switch."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asrth_jax.config_lib import load_config_file
from asrth_jax.models import adasr

TINY = str(Path(__file__).resolve().parent / "tiny_train_config.py")


def _images(n=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.uniform(size=(n, size, size, 3)), jnp.float32) for _ in range(2)]


def _variant(model: nnx.Module, cfg, **build_kwargs) -> nnx.Module:
    """`model`'s weights in a generator built with `build_kwargs`: traced abstractly,
    which skips a ~10 s initialisation compile (the variants share parameter shapes)."""
    abstract = adasr.abstract_generator(cfg, **build_kwargs)
    graphdef, abstract_state = nnx.split(abstract)
    state = nnx.state(model)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract_state) == \
        jax.tree.map(lambda a: (a.shape, a.dtype), state)
    return nnx.merge(graphdef, state)


def test_bfloat16_forward_keeps_float32_params_and_tracks_float32():
    cfg = load_config_file(TINY).model
    f32 = adasr.build_generator(cfg, seed=0)
    bf16 = _variant(f32, cfg, dtype="bfloat16")  # asserts float32 parameters
    params = jax.tree.leaves(nnx.state(bf16, nnx.Param))
    assert {p.dtype for p in params} == {jnp.dtype("float32")}
    f32.eval()
    bf16.eval()
    source, driving = _images()
    out32 = nnx.jit(lambda m, s, d: m(s, d))(f32, source, driving)["prediction"]
    out16 = nnx.jit(lambda m, s, d: m(s, d))(bf16, source, driving)["prediction"]
    assert out16.dtype == jnp.float32 and bool(jnp.isfinite(out16).all())
    assert float(jnp.abs(out32 - out16).mean()) < 0.02


@pytest.mark.slow
def test_remat_changes_memory_not_values():
    cfg = load_config_file(TINY).model
    source, driving = _images(seed=1)
    plain = adasr.build_generator(cfg, seed=0)
    results = []
    for model in (plain, _variant(plain, cfg, remat=True)):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(params, rest, graphdef=graphdef):
            m = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
            return m(source, driving)["prediction"].mean()

        value, grads = jax.jit(jax.value_and_grad(loss))(params, rest)
        results.append((value, jax.tree.leaves(grads)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
