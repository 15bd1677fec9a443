"""Building blocks shared by the AdaSR networks (NHWC / NDHWC layouts).

Attribute names mirror the released PyTorch modules so the converter can map
state-dict keys mechanically (see `asrth_jax/convert.py`).

Two choices here change how (not what) is computed, and both are visible:
- 3D convolutions run as sums of 2D convolutions on the backends in
  `CONV3D_AS_2D_SUMS_BACKENDS` (XLA:CPU's 3D convolution is slow), XLA's own elsewhere;
- training-mode `BatchNorm` takes the statistics of the batch it sees, unless the
  caller gives it a cross-device mean (`set_statistics_mean`, used by the per-device
  train step).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax.errors import ConfigError

Dtype = Any

# PyTorch defaults that decide eval-mode parity with the released checkpoint.
NORM_EPSILON = 1e-5
BATCHNORM_MOMENTUM = 0.9  # flax convention; torch momentum 0.1


# ---------------------------------------------------------------- 3D convolutions
_DN_3D = ("NDHWC", "DHWIO", "NDHWC")
CONV3D_AS_2D_SUMS_BACKENDS = ("cpu",)  # where `conv3d` runs `_conv3d_as_2d`


def _conv3d_as_2d(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
                 rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                 precision=None, **kwargs: Any) -> jax.Array:
    """`lax.conv_general_dilated` for NDHWC 3D convolutions as a sum of 2D convolutions.

    XLA:CPU runs 3D convolutions on a slow generic path (a 7x7x7 kernel is ~25x slower
    than PyTorch/oneDNN), while its 2D convolutions are fast. A stride-1 3D convolution
    is the sum over kernel depth offsets dz of 2D convolutions of the depth-shifted
    input (depth folded into the batch) with the kernel slice at dz. Anything else
    (strides, dilation, groups, string padding) falls back to the XLA operation.
    """
    def fallback():
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kwargs)

    ones = (None, (1, 1, 1), [1, 1, 1], 1)
    if (lhs.ndim != 5 or isinstance(padding, str) or feature_group_count != 1
            or tuple(window_strides) != (1, 1, 1) or lhs_dilation not in ones
            or rhs_dilation not in ones or kwargs.get("out_sharding") is not None):
        return fallback()
    if dimension_numbers is None:  # lax's default layout (NCDHW): not ours
        return fallback()
    expected = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN_3D)
    if jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != expected:
        return fallback()
    extra = {k: v for k, v in kwargs.items() if k != "out_sharding"}
    (d_lo, d_hi), hw_pad = tuple(padding[0]), [tuple(p) for p in padding[1:]]
    b, d, h, w, c = lhs.shape
    kd = rhs.shape[0]
    x = jnp.pad(lhs, ((0, 0), (d_lo, d_hi), (0, 0), (0, 0), (0, 0)))
    d_out = d + d_lo + d_hi - kd + 1
    out = None
    for dz in range(kd):
        y = jax.lax.conv_general_dilated(
            x[:, dz:dz + d_out].reshape(b * d_out, h, w, c), rhs[dz], (1, 1), hw_pad,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision, **extra)
        out = y if out is None else out + y
    return out.reshape((b, d_out) + out.shape[1:])


def conv3d(lhs: jax.Array, rhs: jax.Array, window_strides, padding, **kwargs) -> jax.Array:
    """3D convolution: sums of 2D convolutions on CPU (see `_conv3d_as_2d`), XLA's own
    3D convolution elsewhere (cuDNN / TPU convolutions are fast)."""
    if jax.default_backend() in CONV3D_AS_2D_SUMS_BACKENDS:
        return _conv3d_as_2d(lhs, rhs, window_strides, padding, **kwargs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int | tuple[int, ...],
    *,
    rngs: nnx.Rngs,
    padding: int = 0,
    stride: int | tuple[int, ...] = 1,
    ndim: int = 2,
    use_bias: bool = True,
    dtype: Dtype = None,
) -> nnx.Conv:
    """A convolution with PyTorch-style symmetric integer padding."""
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size,) * ndim
    return nnx.Conv(
        in_features,
        out_features,
        kernel_size=kernel_size,
        strides=stride,
        padding=((padding, padding),) * ndim,  # a tuple: the graph definition stays hashable
        use_bias=use_bias,
        dtype=dtype,
        conv_general_dilated=conv3d if ndim == 3 else jax.lax.conv_general_dilated,
        rngs=rngs,
    )


class _WholeValueAssign:
    """`var[...] = x` as a plain value replacement.

    Flax's `Variable.__setitem__(..., x)` compares `x.sharding` with the stored value's;
    on a tracer that attribute lookup fails by building an error message that scans the
    whole trace for the value's origin. Once per BatchNorm/spectral-norm update that is
    quadratic in the program size: 62 of the 97 s spent tracing the 256x256 generator's
    gradient, and most of the train step's lowering time.
    """

    def __setitem__(self, index, value) -> None:
        if index is Ellipsis:
            self.set_value(value)
        else:
            super().__setitem__(index, value)


class BatchStat(_WholeValueAssign, nnx.BatchStat):
    """BatchNorm running statistics (see `_WholeValueAssign`)."""


class _RngCount(_WholeValueAssign, nnx.RngCount):
    """An RNG stream's draw counter, bumped with `count[...] += 1` at every draw."""


def traceable_rngs(key: jax.Array | int) -> nnx.Rngs:
    """`nnx.Rngs(key)` for building modules inside `jax.jit`: every parameter draw bumps
    a counter, which must not pay `_WholeValueAssign`'s quadratic cost (45 of the 58 s
    spent tracing the 256x256 generator's initialisation)."""
    rngs = nnx.Rngs(key)
    for stream in vars(rngs).values():
        if isinstance(stream, nnx.RngStream):
            stream.count = _RngCount(stream.count.get_value(), tag=stream.count.tag)
    return rngs


def set_statistics_mean(module: nnx.Module,
                        mean_over_devices: Callable[[jax.Array], jax.Array] | None,
                        num_devices: int = 1) -> None:
    """Every `BatchNorm` in `module` averages its training-mode statistics with
    `mean_over_devices` over `num_devices` (for a step written per device, e.g. under
    `shard_map`); None (the default) takes the statistics of the batch the module sees:
    a step over the global batch, where XLA's partitioner does the averaging."""
    for _, child in nnx.iter_modules(module):
        if isinstance(child, BatchNorm):
            child.mean_over_devices = mean_over_devices
            child.num_devices = num_devices


RUNNING_VARIANCES = ("unbiased", "biased")  # `train.batchnorm_running_var`


def set_running_variance(module: nnx.Module, kind: str) -> None:
    """How every `BatchNorm` in `module` folds a training batch's variance into its
    running variance: "unbiased" (x n/(n-1), as PyTorch's BatchNorm does) or "biased"
    (Flax's). Normalisation itself always uses the biased batch variance, in both."""
    if kind not in RUNNING_VARIANCES:
        raise ConfigError(f"config.train.batchnorm_running_var={kind!r}; use one of "
                          f"{', '.join(RUNNING_VARIANCES)}")
    for _, child in nnx.iter_modules(module):
        if isinstance(child, BatchNorm):
            child.unbiased_running_var = kind == "unbiased"


def set_statistics_groups(module: nnx.Module, groups: int) -> None:
    """Every `BatchNorm` in `module` treats its batch as `groups` interleaved batches
    (row b * groups + g belongs to batch g) with statistics of their own, folded into the
    running statistics in the order g = 0, 1, ...: one call on the interleaved batches
    equals `groups` calls in that order, in one program (see `interleave`)."""
    for _, child in nnx.iter_modules(module):
        if isinstance(child, BatchNorm):
            child.statistics_groups = groups


def interleave(batches: Sequence[jax.Array]) -> jax.Array:
    """(B, ...) arrays -> (B * G, ...), row b * G + g from batch g. The interleaved rows of
    one example stay on its device when the batch axis is sharded."""
    stacked = jnp.stack(batches, axis=1)
    return stacked.reshape((-1,) + stacked.shape[2:])


def deinterleave(x: jax.Array, groups: int) -> list[jax.Array]:
    """The inverse of `interleave`: batch g of `groups`."""
    x = x.reshape((-1, groups) + x.shape[1:])
    return [x[:, g] for g in range(groups)]


class BatchNorm(nnx.BatchNorm):
    """`nnx.BatchNorm` whose training-mode statistics can be averaged over devices by a
    caller-chosen reduction, `mean_over_devices` (see `set_statistics_mean`), whose
    running variance can take the unbiased batch variance (`set_running_variance`), and
    which can normalise interleaved batches apart (`set_statistics_groups`)."""

    mean_over_devices: Callable[[jax.Array], jax.Array] | None = None
    num_devices: int = 1
    unbiased_running_var: bool = False
    statistics_groups: int = 1

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        mean_over_devices = self.mean_over_devices
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average or mask is not None or (
                mean_over_devices is None and not self.unbiased_running_var
                and self.statistics_groups == 1):
            return super().__call__(x, use_running_average, mask=mask)
        return self._train_mode(x, self.statistics_groups)

    def _train_mode(self, x: jax.Array, groups: int) -> jax.Array:
        """Training mode over `groups` interleaved batches (1: the batch), each with its
        own statistics, folded into the running ones in group order."""
        x32 = x.astype(jnp.float32).reshape((-1, groups) + x.shape[1:])
        axes = (0,) + tuple(range(2, x32.ndim - 1))  # all but the group and the channel
        moments = jnp.stack([x32.mean(axes), jnp.square(x32).mean(axes)])  # (2, G, C)
        if self.mean_over_devices is not None:
            moments = self.mean_over_devices(moments)
        mean, mean_square = moments
        var = jnp.maximum(mean_square - jnp.square(mean), 0.0)
        running_var = var
        if self.unbiased_running_var:
            count = math.prod(x.shape[:-1]) // groups * self.num_devices
            running_var = var * (count / max(count - 1, 1))
        for g in range(groups):
            for stored, batch_value in ((self.mean, mean[g]), (self.var, running_var[g])):
                stored[...] = jax.lax.stop_gradient(
                    self.momentum * stored[...] + (1 - self.momentum) * batch_value)
        shape = (1, groups) + (1,) * (x32.ndim - 3) + (-1,)
        inv = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
        y = (x32 - mean.reshape(shape)) * inv.reshape(shape) + self.bias[...]
        return y.reshape(x.shape).astype(self.dtype or x.dtype)


def batch_norm(features: int, *, rngs: nnx.Rngs, dtype: Dtype = None) -> BatchNorm:
    norm = BatchNorm(
        features,
        momentum=BATCHNORM_MOMENTUM,
        epsilon=NORM_EPSILON,
        dtype=dtype,
        rngs=rngs,
    )
    norm.mean = BatchStat(norm.mean.get_value())
    norm.var = BatchStat(norm.var.get_value())
    return norm


def group_norm(features: int, *, rngs: nnx.Rngs, dtype: Dtype = None) -> nnx.GroupNorm:
    """Per-example statistics (8 groups, fewer where the width is not a multiple of 8):
    unlike BatchNorm, an example's output does not depend on the rest of a small batch."""
    return nnx.GroupNorm(features, num_groups=math.gcd(8, features), epsilon=NORM_EPSILON,
                         dtype=dtype, rngs=rngs)


NormFactory = Callable[..., nnx.Module]
NORM_LAYERS: dict[str, NormFactory] = {"batch": batch_norm, "group": group_norm}


def norm_layer(name: str) -> NormFactory:
    """The norm factory a config names (`model.he_estimator.norm`)."""
    if name not in NORM_LAYERS:
        raise ConfigError(f"model.he_estimator.norm={name!r} is not a norm layer; use one of "
                          f"{', '.join(NORM_LAYERS)}")
    return NORM_LAYERS[name]


def instance_norm(x: jax.Array, epsilon: float = NORM_EPSILON) -> jax.Array:
    """Parameter-free instance norm over the spatial axes of an NHWC tensor."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(axis=(1, 2), keepdims=True)
    var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + epsilon)).astype(x.dtype)


def upsample_nearest(x: jax.Array, factor: int = 2, spatial_axes: tuple[int, ...] = (1, 2)):
    """Nearest-neighbour upsampling (PyTorch `F.interpolate` default mode)."""
    for axis in spatial_axes:
        x = jnp.repeat(x, factor, axis=axis)
    return x


def conv_of_upsampled(layer: nnx.Conv, x: jax.Array, factors: tuple[int, ...]) -> jax.Array:
    """`layer(x upsampled by nearest neighbour)`, computed at ``x``'s resolution.

    A nearest upsample repeats every pixel, so the product of a kernel tap with the
    upsampled input is the upsampled product of that tap with ``x``: one product per
    tap at the small size instead of prod(factors) (16x fewer multiply-adds for the
    decoder's last SPADE block). Each output phase (its position inside the
    upsampled pixel) is a sum of those products shifted by -1, 0 or +1 small pixels,
    zero-filled like the padding; the phases are then interleaved. Neither the
    upsampled input nor any per-tap upsampled array is ever built. ``factors`` has
    one entry per spatial axis. A convolution that is not stride 1, undilated,
    ungrouped and "same"-padded (or all factors 1) runs on the upsampled input as it is.
    """
    kernel = layer.kernel[...]
    spatial = kernel.shape[:-2]
    if len(factors) != len(spatial):
        raise ValueError(f"conv_of_upsampled: {len(factors)} factors for a "
                         f"{len(spatial)}D convolution")
    same = (not isinstance(layer.padding, str) and len(layer.padding) == len(spatial)
            and all(k % 2 == 1 and tuple(p) == ((k - 1) // 2,) * 2
                    for k, p in zip(spatial, layer.padding, strict=True)))
    if (not same or all(f == 1 for f in factors)
            or any(s != 1 for s in _as_tuple(layer.strides, spatial))
            or any(d != 1 for d in _as_tuple(layer.kernel_dilation, spatial))
            or any(d != 1 for d in _as_tuple(layer.input_dilation, spatial))
            or layer.feature_group_count != 1):
        for axis, factor in enumerate(factors):
            if factor > 1:
                x = upsample_nearest(x, factor, spatial_axes=(axis + 1,))
        return layer(x)
    dtype = layer.dtype or jnp.result_type(x.dtype, kernel.dtype)
    x = x.astype(dtype)
    kernel = kernel.astype(dtype)
    low = x.shape[1:-1]
    halo = [(k - 1) // 2 for k in spatial]
    pads = [(0, 0)] + [(h, h) for h in halo] + [(0, 0)]
    taps = list(itertools.product(*(range(k) for k in spatial)))
    products = [jnp.pad(jnp.tensordot(x, kernel[tap], axes=1,
                                      preferred_element_type=jnp.float32), pads)
                for tap in taps]
    phases = []
    for phase in itertools.product(*(range(f) for f in factors)):
        total = None
        for tap, product in zip(taps, products, strict=True):
            # Upsampled row f*y + phase + tap - halo lies in small row y + shift.
            shifts = [(ph + t - h) // f for ph, t, h, f in zip(phase, tap, halo, factors,
                                                               strict=True)]
            window = tuple(slice(h + sh, h + sh + n)
                           for h, sh, n in zip(halo, shifts, low, strict=True))
            term = product[(slice(None),) + window]
            total = term if total is None else total + term
        phases.append(total)
    # (phases..., B, low..., C) -> (B, low_0, f_0, low_1, f_1, ..., C) -> upsampled layout
    stacked = jnp.stack(phases).reshape(*factors, *phases[0].shape)
    n = len(factors)
    order = [n] + [a for i in range(n) for a in (n + 1 + i, i)] + [2 * n + 1]
    out = stacked.transpose(order).reshape(
        x.shape[0], *(m * f for m, f in zip(low, factors, strict=True)), -1)
    if layer.bias is not None:
        out = out + layer.bias[...].astype(jnp.float32)
    return out.astype(dtype)


def _as_tuple(value: int | tuple[int, ...] | None, spatial: tuple[int, ...]) -> tuple[int, ...]:
    if value is None:
        return (1,) * len(spatial)
    return (value,) * len(spatial) if isinstance(value, int) else tuple(value)


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """Non-overlapping 2x2 average over the last two spatial axes (H, W)."""
    *lead, h, w, c = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2, :]
    x = x.reshape(*lead, h // 2, 2, w // 2, 2, c)
    return x.mean(axis=(-4, -2))


class SpectralVector(_WholeValueAssign, nnx.Variable):
    """Power-iteration vectors of spectral normalisation (state, not trained; see
    `_WholeValueAssign`)."""


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


class SpectralConv2d(nnx.Module):
    """2D convolution whose kernel is divided by its largest singular value.

    Eval mode uses the stored (u, v) as PyTorch does (no power iteration); train
    mode runs one power iteration and stores the new vectors, like
    `torch.nn.utils.spectral_norm`. `v` is kept in our kernel's (H, W, I) order.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        rngs: nnx.Rngs,
        padding: int = 0,
        use_bias: bool = True,
        dtype: Dtype = None,
    ):
        shape = (kernel_size, kernel_size, in_features, out_features)
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.u = SpectralVector(_l2_normalize(jax.random.normal(rngs.params(), (out_features,))))
        fan_in = kernel_size * kernel_size * in_features
        self.v = SpectralVector(_l2_normalize(jax.random.normal(rngs.params(), (fan_in,))))
        self.padding = padding
        self.dtype = dtype
        self.use_running_average = False

    def normalized_kernel(self) -> jax.Array:
        kernel = self.kernel[...]
        matrix = kernel.reshape(-1, kernel.shape[-1]).T  # (out, kh*kw*in)
        u, v = self.u[...], self.v[...]
        if not self.use_running_average:
            v = _l2_normalize(matrix.T @ u)
            u = _l2_normalize(matrix @ v)
            self.u[...] = jax.lax.stop_gradient(u)
            self.v[...] = jax.lax.stop_gradient(v)
        u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
        sigma = u @ (matrix @ v)
        return kernel / sigma

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        kernel = self.normalized_kernel().astype(dtype)
        pad = [(self.padding, self.padding)] * 2
        y = jax.lax.conv_general_dilated(
            x.astype(dtype), kernel, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y


class SameBlock2d(nnx.Module):
    """conv -> BatchNorm -> ReLU (or LeakyReLU 0.01), resolution preserved."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1, lrelu=False, *,
                 rngs: nnx.Rngs, dtype: Dtype = None):
        self.conv = conv(in_features, out_features, kernel_size, padding=padding, rngs=rngs,
                         dtype=dtype)
        self.norm = batch_norm(out_features, rngs=rngs, dtype=dtype)
        self.lrelu = lrelu

    def __call__(self, x):
        x = self.norm(self.conv(x))
        return nnx.leaky_relu(x, 0.01) if self.lrelu else nnx.relu(x)


class DownBlock2d(nnx.Module):
    """conv -> BatchNorm -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features, out_features, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.conv = conv(in_features, out_features, 3, padding=1, rngs=rngs, dtype=dtype)
        self.norm = batch_norm(out_features, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return avg_pool_2x2(nnx.relu(self.norm(self.conv(x))))


class UpBlock2d(nnx.Module):
    """nearest x2 -> conv -> BatchNorm -> ReLU."""

    def __init__(self, in_features, out_features, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.conv = conv(in_features, out_features, 3, padding=1, rngs=rngs, dtype=dtype)
        self.norm = batch_norm(out_features, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return nnx.relu(self.norm(self.conv(upsample_nearest(x))))


class DownBlock3d(nnx.Module):
    """3D conv -> BatchNorm -> ReLU -> average pool over (H, W) only."""

    def __init__(self, in_features, out_features, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.conv = conv(in_features, out_features, 3, padding=1, ndim=3, rngs=rngs, dtype=dtype)
        self.norm = batch_norm(out_features, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return avg_pool_2x2(nnx.relu(self.norm(self.conv(x))))


class UpBlock3d(nnx.Module):
    """nearest x2 over (H, W) -> 3D conv -> BatchNorm -> ReLU."""

    def __init__(self, in_features, out_features, *, rngs: nnx.Rngs, dtype: Dtype = None):
        self.conv = conv(in_features, out_features, 3, padding=1, ndim=3, rngs=rngs, dtype=dtype)
        self.norm = batch_norm(out_features, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return nnx.relu(self.norm(self.conv(upsample_nearest(x, spatial_axes=(2, 3)))))


class ResBlock(nnx.Module):
    """Pre-activation residual block (BN -> ReLU -> conv) x2, 2D or 3D."""

    def __init__(self, features, *, ndim: int = 2, rngs: nnx.Rngs, dtype: Dtype = None):
        self.conv1 = conv(features, features, 3, padding=1, ndim=ndim, rngs=rngs, dtype=dtype)
        self.conv2 = conv(features, features, 3, padding=1, ndim=ndim, rngs=rngs, dtype=dtype)
        self.norm1 = batch_norm(features, rngs=rngs, dtype=dtype)
        self.norm2 = batch_norm(features, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        out = self.conv1(nnx.relu(self.norm1(x)))
        out = self.conv2(nnx.relu(self.norm2(out)))
        return out + x


class ResBottleneck(nnx.Module):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1, BatchNorm, post-activation)."""

    def __init__(self, features, stride, *, norm: NormFactory = batch_norm, rngs: nnx.Rngs,
                 dtype: Dtype = None):
        mid = features // 4
        self.conv1 = conv(features, mid, 1, rngs=rngs, dtype=dtype)
        self.conv2 = conv(mid, mid, 3, padding=1, stride=stride, rngs=rngs, dtype=dtype)
        self.conv3 = conv(mid, features, 1, rngs=rngs, dtype=dtype)
        self.norm1 = norm(mid, rngs=rngs, dtype=dtype)
        self.norm2 = norm(mid, rngs=rngs, dtype=dtype)
        self.norm3 = norm(features, rngs=rngs, dtype=dtype)
        self.stride = stride
        if stride != 1:
            self.skip = conv(features, features, 1, stride=stride, rngs=rngs, dtype=dtype)
            self.norm4 = norm(features, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        out = nnx.relu(self.norm1(self.conv1(x)))
        out = nnx.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return nnx.relu(out + x)


class SPADE(nnx.Module):
    """Spatially-adaptive normalisation: instance norm modulated by a label map."""

    def __init__(self, norm_features, label_features, hidden=128, *, rngs: nnx.Rngs,
                 dtype: Dtype = None):
        self.mlp_shared = conv(label_features, hidden, 3, padding=1, rngs=rngs, dtype=dtype)
        self.mlp_gamma = conv(hidden, norm_features, 3, padding=1, rngs=rngs, dtype=dtype)
        self.mlp_beta = conv(hidden, norm_features, 3, padding=1, rngs=rngs, dtype=dtype)

    def __call__(self, x, segmap):
        normalized = instance_norm(x)
        factor = x.shape[1] // segmap.shape[1]
        actv = nnx.relu(conv_of_upsampled(self.mlp_shared, segmap, (factor, factor)))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nnx.Module):
    """SPADE residual block with spectral-normalised convolutions."""

    def __init__(self, fin, fout, label_features, hidden=128, *, rngs: nnx.Rngs,
                 dtype: Dtype = None):
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralConv2d(fin, fmiddle, 3, padding=1, rngs=rngs, dtype=dtype)
        self.conv_1 = SpectralConv2d(fmiddle, fout, 3, padding=1, rngs=rngs, dtype=dtype)
        self.norm_0 = SPADE(fin, label_features, hidden, rngs=rngs, dtype=dtype)
        self.norm_1 = SPADE(fmiddle, label_features, hidden, rngs=rngs, dtype=dtype)
        if self.learned_shortcut:
            self.conv_s = SpectralConv2d(fin, fout, 1, use_bias=False, rngs=rngs, dtype=dtype)
            self.norm_s = SPADE(fin, label_features, hidden, rngs=rngs, dtype=dtype)

    def __call__(self, x, seg):
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(nnx.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(nnx.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


def channels_to_depth(x: jax.Array, depth: int) -> jax.Array:
    """(B, H, W, C*D) -> (B, D, H, W, C), matching torch's `.view(b, C, D, h, w)`."""
    b, h, w, cd = x.shape
    x = x.reshape(b, h, w, cd // depth, depth)
    return jnp.transpose(x, (0, 4, 1, 2, 3))


def depth_to_channels(x: jax.Array) -> jax.Array:
    """(B, D, H, W, C) -> (B, H, W, C*D), matching torch's `.view(b, C*D, h, w)`."""
    b, d, h, w, c = x.shape
    return jnp.transpose(x, (0, 2, 3, 4, 1)).reshape(b, h, w, c * d)
