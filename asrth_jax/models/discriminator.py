"""Multi-scale pix2pix patch discriminator with spectral norm and instance norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax.models import blocks
from asrth_jax.models.antialias import anti_alias_downsample


class InstanceNorm(nnx.Module):
    """Affine instance norm (torch `InstanceNorm2d(affine=True)`)."""

    def __init__(self, features: int):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))

    def __call__(self, x):
        y = blocks.instance_norm(x)
        return y * self.scale[...].astype(y.dtype) + self.bias[...].astype(y.dtype)


class DiscDownBlock(nnx.Module):
    def __init__(self, fin, fout, *, norm, pool, sn, rngs, dtype=None):
        if sn:
            self.conv = blocks.SpectralConv2d(fin, fout, 4, rngs=rngs, dtype=dtype)
        else:
            self.conv = blocks.conv(fin, fout, 4, rngs=rngs, dtype=dtype)
        self.norm = InstanceNorm(fout) if norm else None
        self.pool = pool

    def __call__(self, x):
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = nnx.leaky_relu(out, 0.2)
        return blocks.avg_pool_2x2(out) if self.pool else out


class Discriminator(nnx.Module):
    def __init__(self, *, num_channels=3, block_expansion=64, num_blocks=4, max_features=512,
                 sn=False, rngs: nnx.Rngs, dtype=None):
        down = []
        for i in range(num_blocks):
            fin = num_channels if i == 0 else min(max_features, block_expansion * 2**i)
            fout = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(DiscDownBlock(fin, fout, norm=i != 0, pool=i != num_blocks - 1, sn=sn,
                                      rngs=rngs, dtype=dtype))
        self.down_blocks = nnx.List(down)
        if sn:
            self.conv = blocks.SpectralConv2d(fout, 1, 1, rngs=rngs, dtype=dtype)
        else:
            self.conv = blocks.conv(fout, 1, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        feature_maps = []
        for block in self.down_blocks:
            x = block(x)
            feature_maps.append(x)
        return feature_maps, self.conv(x).astype(jnp.float32)


class MultiScaleDiscriminator(nnx.Module):
    """One patch discriminator per image scale; inputs are anti-aliased pyramids."""

    def __init__(self, *, scales=(1,), rngs: nnx.Rngs, dtype=None, **kwargs):
        self.scales = tuple(scales)
        self.discs = nnx.List([Discriminator(rngs=rngs, dtype=dtype, **kwargs) for _ in scales])

    def __call__(self, image: jax.Array) -> dict[str, list]:
        """Returns {'feature_maps': [per scale: [maps]], 'prediction_maps': [per scale]}."""
        features, predictions = [], []
        for scale, disc in zip(self.scales, self.discs, strict=True):
            maps, pred = disc(anti_alias_downsample(image, scale))
            features.append(maps)
            predictions.append(pred)
        return {"feature_maps": features, "prediction_maps": predictions}
