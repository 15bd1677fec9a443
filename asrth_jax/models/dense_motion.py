"""Dense 3D motion and occlusion from sparse keypoint motions (reference
`DenseMotionNetwork`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax.models import blocks
from asrth_jax.models.warp import grid_sample_3d, make_coordinate_grid_3d

KP_VARIANCE = 0.01


class Encoder3d(nnx.Module):
    def __init__(self, block_expansion, in_features, num_blocks, max_features, *, rngs,
                 dtype=None):
        down = []
        for i in range(num_blocks):
            fin = in_features if i == 0 else min(max_features, block_expansion * 2**i)
            fout = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(blocks.DownBlock3d(fin, fout, rngs=rngs, dtype=dtype))
        self.down_blocks = nnx.List(down)

    def __call__(self, x):
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder3d(nnx.Module):
    def __init__(self, block_expansion, in_features, num_blocks, max_features, *, rngs,
                 dtype=None):
        up = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            fin = mult * min(max_features, block_expansion * 2 ** (i + 1))
            fout = min(max_features, block_expansion * 2**i)
            up.append(blocks.UpBlock3d(fin, fout, rngs=rngs, dtype=dtype))
        self.up_blocks = nnx.List(up)
        self.out_filters = block_expansion + in_features
        self.conv = blocks.conv(self.out_filters, self.out_filters, 3, padding=1, ndim=3,
                                rngs=rngs, dtype=dtype)
        self.norm = blocks.batch_norm(self.out_filters, rngs=rngs, dtype=dtype)

    def __call__(self, skips):
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = jnp.concatenate([block(out), skips.pop()], axis=-1)
        return nnx.relu(self.norm(self.conv(out)))


class Hourglass3d(nnx.Module):
    def __init__(self, block_expansion, in_features, num_blocks, max_features, *, rngs,
                 dtype=None):
        self.encoder = Encoder3d(block_expansion, in_features, num_blocks, max_features,
                                 rngs=rngs, dtype=dtype)
        self.decoder = Decoder3d(block_expansion, in_features, num_blocks, max_features,
                                 rngs=rngs, dtype=dtype)
        self.out_filters = self.decoder.out_filters

    def __call__(self, x):
        return self.decoder(self.encoder(x))


def keypoint_gaussians(kp: jax.Array, grid: jax.Array) -> jax.Array:
    """(B, K, 3) keypoints on a (D, H, W, 3) grid -> (B, K, D, H, W) Gaussians."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return jnp.exp(-0.5 * jnp.square(diff).sum(-1) / KP_VARIANCE)


def sparse_motions(kp_driving: jax.Array, kp_source: jax.Array, grid: jax.Array) -> jax.Array:
    """Identity plus one translation per keypoint: (B, K+1, D, H, W, 3) source coords."""
    b = kp_driving.shape[0]
    shift = (kp_source - kp_driving)[:, :, None, None, None, :]
    per_kp = grid[None, None] + shift
    identity = jnp.broadcast_to(grid[None, None], (b, 1) + grid.shape)
    return jnp.concatenate([identity, per_kp], axis=1)


# One volume, many grids (the K+1 motions), then over the batch.
_sample_motions = jax.vmap(jax.vmap(grid_sample_3d, in_axes=(None, 0)), in_axes=(0, 0))


class DenseMotionNetwork(nnx.Module):
    """Predicts the deformation field (B, D, H, W, 3) and occlusion map (B, H, W, 1)."""

    def __init__(self, *, block_expansion, num_blocks, max_features, num_kp,
                 feature_channel, reshape_depth, compress, estimate_occlusion_map=True,
                 remat=False, rngs: nnx.Rngs, dtype=None):
        in_features = (num_kp + 1) * (compress + 1)
        self.hourglass = Hourglass3d(block_expansion, in_features, num_blocks, max_features,
                                     rngs=rngs, dtype=dtype)
        self.mask = blocks.conv(self.hourglass.out_filters, num_kp + 1, 7, padding=3, ndim=3,
                                rngs=rngs, dtype=dtype)
        self.compress = blocks.conv(feature_channel, compress, 1, ndim=3, rngs=rngs,
                                    dtype=dtype)
        self.norm = blocks.batch_norm(compress, rngs=rngs, dtype=dtype)
        self.occlusion = (
            blocks.conv(self.hourglass.out_filters * reshape_depth, 1, 7, padding=3,
                        rngs=rngs, dtype=dtype)
            if estimate_occlusion_map else None
        )
        self.num_kp = num_kp
        self.remat = remat

    def __call__(self, feature: jax.Array, kp_driving: jax.Array,
                 kp_source: jax.Array) -> dict[str, jax.Array]:
        b, d, h, w, _ = feature.shape
        feature = nnx.relu(self.norm(self.compress(feature)))
        grid = make_coordinate_grid_3d(d, h, w)
        motions = sparse_motions(kp_driving, kp_source, grid)  # (B, K+1, D, H, W, 3)
        deformed = _sample_motions(feature, motions.astype(feature.dtype))  # (B,K+1,D,H,W,c)

        heat = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)
        heat = jnp.concatenate([jnp.zeros_like(heat[:, :1]), heat], axis=1)
        # Channel order (k, [heatmap, features]) as the reference's cat + view.
        stacked = jnp.concatenate([heat[..., None].astype(deformed.dtype), deformed], -1)
        stacked = jnp.transpose(stacked, (0, 2, 3, 4, 1, 5)).reshape(b, d, h, w, -1)

        if self.remat:  # recompute the 3D hourglass in the backward pass to save memory
            prediction = nnx.remat(lambda mdl, x: mdl(x))(self.hourglass, stacked)
        else:
            prediction = self.hourglass(stacked)
        mask = jax.nn.softmax(self.mask(prediction).astype(jnp.float32), axis=-1)
        deformation = jnp.einsum("bdhwk,bkdhwc->bdhwc", mask, motions)
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            occ = self.occlusion(blocks.depth_to_channels(prediction))
            out["occlusion_map"] = jax.nn.sigmoid(occ.astype(jnp.float32))
        return out
