"""Canonical 3D keypoint detector (reference `KPDetector` with `KPHourglass`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax.models import blocks
from asrth_jax.models.antialias import anti_alias_downsample
from asrth_jax.models.warp import make_coordinate_grid_3d


class KPHourglass(nnx.Module):
    """2D encoder, 1x1 conv, fold channels into depth, 3D decoder."""

    def __init__(self, block_expansion, in_features, reshape_features, reshape_depth,
                 num_blocks, max_features, *, rngs: nnx.Rngs, dtype=None):
        down = []
        for i in range(num_blocks):
            fin = in_features if i == 0 else min(max_features, block_expansion * 2**i)
            fout = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(blocks.DownBlock2d(fin, fout, rngs=rngs, dtype=dtype))
        self.down_blocks = nnx.List(down)
        fin = min(max_features, block_expansion * 2**num_blocks)
        self.conv = blocks.conv(fin, reshape_features, 1, rngs=rngs, dtype=dtype)
        up = []
        for i in range(num_blocks):
            fin = min(max_features, block_expansion * 2 ** (num_blocks - i))
            fout = min(max_features, block_expansion * 2 ** (num_blocks - i - 1))
            up.append(blocks.UpBlock3d(fin, fout, rngs=rngs, dtype=dtype))
        self.up_blocks = nnx.List(up)
        self.reshape_depth = reshape_depth
        self.out_filters = fout

    def __call__(self, x):
        for block in self.down_blocks:
            x = block(x)
        x = blocks.channels_to_depth(self.conv(x), self.reshape_depth)
        for block in self.up_blocks:
            x = block(x)
        return x


def heatmap_to_keypoints(heatmap_logits: jax.Array, temperature: float) -> jax.Array:
    """Soft-argmax: (B, D, H, W, K) logits -> (B, K, 3) expected (x, y, z) coordinates."""
    b, d, h, w, k = heatmap_logits.shape
    flat = heatmap_logits.reshape(b, d * h * w, k).astype(jnp.float32)
    probs = jax.nn.softmax(flat / temperature, axis=1)
    grid = make_coordinate_grid_3d(d, h, w).reshape(d * h * w, 3)
    return jnp.einsum("bnk,nc->bkc", probs, grid)


class KPDetector(nnx.Module):
    """Image -> K canonical 3D keypoints (B, K, 3) in [-1, 1]."""

    def __init__(self, *, block_expansion, num_kp, image_channel, max_features,
                 reshape_channel, reshape_depth, num_blocks, temperature, scale_factor,
                 rngs: nnx.Rngs, dtype=None):
        self.predictor = KPHourglass(block_expansion, image_channel, reshape_channel,
                                     reshape_depth, num_blocks, max_features, rngs=rngs,
                                     dtype=dtype)
        self.kp = blocks.conv(self.predictor.out_filters, num_kp, 3, padding=1, ndim=3,
                              rngs=rngs, dtype=dtype)
        self.temperature = temperature
        self.scale_factor = scale_factor

    def __call__(self, image: jax.Array) -> jax.Array:
        x = anti_alias_downsample(image, self.scale_factor)
        return heatmap_to_keypoints(self.kp(self.predictor(x)), self.temperature)
