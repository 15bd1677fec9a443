"""PyTorch's default initialisation of the AdaSR networks, drawn on the host.

The paper's networks train from scratch with PyTorch's defaults (`reset_parameters` of
`nn.Conv*d` and `nn.Linear`): weights kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)),
and biases U(+-1/sqrt(fan_in)); norm layers start at scale 1, shift 0, running mean 0,
running variance 1; spectral norm's power-iteration vectors are normalised N(0, 1) draws.

Drawn with NumPy rather than inside a jitted program: initialising the 256x256 model as
one XLA program cost ~76 s of compilation on CPU and ~100 s on a GPU, for what is a few
hundred independent random draws. Each array gets its own generator seeded by (seed, its
path), so its values depend on nothing else: not the device, the mesh, the number of
processes, nor the order in which arrays are visited.
"""

from __future__ import annotations

import math
import zlib

import jax
import numpy as np
from flax import nnx

from asrth_jax.models import blocks
from asrth_jax.models.discriminator import InstanceNorm

# What each norm-like layer's variables start at (PyTorch and Flax agree on these).
_CONSTANT_INIT: dict[tuple[type, str], float] = {
    (nnx.BatchNorm, "scale"): 1.0, (nnx.BatchNorm, "bias"): 0.0,
    (nnx.BatchNorm, "mean"): 0.0, (nnx.BatchNorm, "var"): 1.0,
    (nnx.GroupNorm, "scale"): 1.0, (nnx.GroupNorm, "bias"): 0.0,
    (InstanceNorm, "scale"): 1.0, (InstanceNorm, "bias"): 0.0,
}


class UncoveredVariableError(TypeError):
    """A module variable this initialiser has no PyTorch rule for."""


def _generator(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float) -> np.ndarray:
    x = rng.random(shape, dtype=np.float32)
    x *= np.float32(2.0 * bound)
    x -= np.float32(bound)
    return x


def _unit_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    x = rng.standard_normal(size, dtype=np.float32)
    return (x / max(float(np.linalg.norm(x)), 1e-12)).astype(np.float32)


def fan_in(kernel_shape: tuple[int, ...]) -> int:
    """Inputs per output unit of a Flax kernel: (*spatial, in, out) for convolutions and
    (in, out) for dense layers, so every axis but the last."""
    return math.prod(kernel_shape[:-1])


def _draw(module: nnx.Module, attr: str, shape: tuple[int, ...], seed: int,
          name: str) -> np.ndarray:
    if isinstance(module, (nnx.Conv, nnx.Linear, blocks.SpectralConv2d)):
        bound = 1.0 / math.sqrt(fan_in(tuple(module.kernel.shape)))
        if attr in ("kernel", "bias"):
            return _uniform(_generator(seed, name), shape, bound)
        if isinstance(module, blocks.SpectralConv2d) and attr in ("u", "v"):
            return _unit_normal(_generator(seed, name), math.prod(shape)).reshape(shape)
    for (kind, name), value in _CONSTANT_INIT.items():
        if isinstance(module, kind) and attr == name:
            return np.full(shape, value, np.float32)
    raise UncoveredVariableError(f"no PyTorch default initialisation for "
                                 f"{type(module).__name__}.{attr} {shape}")


def torch_default_state(module: nnx.Module, seed: int, network: str) -> nnx.State:
    """Every variable of `module` (which may be abstract, from `nnx.eval_shape`) drawn as
    PyTorch initialises it, as host NumPy arrays; `network` names the module in the
    seeds, so two networks built from one `seed` do not share draws."""
    values: dict[tuple, np.ndarray] = {}
    for path, child in nnx.iter_modules(module):
        for attr, variable in vars(child).items():
            if not isinstance(variable, nnx.Variable):
                continue
            name = "/".join(str(p) for p in (network, *path, attr))
            shape = tuple(variable.shape)
            values[(*path, attr)] = _draw(child, attr, shape, seed, name)
    state = nnx.state(module)

    def fill(path, leaf):
        key = tuple(p.key if isinstance(p, jax.tree_util.DictKey) else p.idx
                    for p in path if not isinstance(p, jax.tree_util.GetAttrKey))
        if key not in values:
            raise UncoveredVariableError(f"{'/'.join(map(str, key))} was not initialised")
        return values[key].astype(leaf.dtype, copy=False)

    return jax.tree_util.tree_map_with_path(fill, state)
