"""Head-pose / expression estimator and the keypoint transformation.

Conventions follow the reference demo: 66 angle bins, degrees = E[bin] * 3 - 99,
rotation = R_pitch(x) @ R_yaw(y) @ R_roll(z) with degrees->radians using 3.14.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax.models import blocks

NUM_BINS = 66


class HEEstimator(nnx.Module):
    """ResNet-bottleneck trunk -> yaw/pitch/roll bin logits, translation, expression."""

    def __init__(self, *, block_expansion, num_kp, image_channel, num_bins=NUM_BINS,
                 stage_features=(256, 512, 1024, 2048), stage_blocks=(3, 3, 5, 2),
                 norm: blocks.NormFactory = blocks.batch_norm, rngs: nnx.Rngs, dtype=None):
        """`norm` builds every norm layer: the release's BatchNorm, or `blocks.group_norm`
        for small-batch training, where batch statistics over a few examples blur the
        absolute pose this network regresses."""
        f1, f2, f3, f4 = stage_features
        n1, n3, n5, n7 = stage_blocks
        kw = dict(rngs=rngs, dtype=dtype)
        bkw = dict(norm=norm, **kw)
        self.conv1 = blocks.conv(image_channel, block_expansion, 7, padding=3, stride=2, **kw)
        self.norm1 = norm(block_expansion, **kw)
        self.conv2 = blocks.conv(block_expansion, f1, 1, **kw)
        self.norm2 = norm(f1, **kw)
        self.block1 = nnx.List([blocks.ResBottleneck(f1, 1, **bkw) for _ in range(n1)])
        self.conv3 = blocks.conv(f1, f2, 1, **kw)
        self.norm3 = norm(f2, **kw)
        self.block2 = blocks.ResBottleneck(f2, 2, **bkw)
        self.block3 = nnx.List([blocks.ResBottleneck(f2, 1, **bkw) for _ in range(n3)])
        self.conv4 = blocks.conv(f2, f3, 1, **kw)
        self.norm4 = norm(f3, **kw)
        self.block4 = blocks.ResBottleneck(f3, 2, **bkw)
        self.block5 = nnx.List([blocks.ResBottleneck(f3, 1, **bkw) for _ in range(n5)])
        self.conv5 = blocks.conv(f3, f4, 1, **kw)
        self.norm5 = norm(f4, **kw)
        self.block6 = blocks.ResBottleneck(f4, 2, **bkw)
        self.block7 = nnx.List([blocks.ResBottleneck(f4, 1, **bkw) for _ in range(n7)])
        # Zero-initialised heads: training starts from a frontal pose, no translation and
        # no expression, i.e. near-identity motion. Random heads put the keypoints
        # outside the [-1, 1] volume, so the warp reads zeros and the decoder learns a
        # mean face before it can learn to move the source.
        head = dict(kernel_init=nnx.initializers.zeros, **kw)
        self.fc_roll = nnx.Linear(f4, num_bins, **head)
        self.fc_pitch = nnx.Linear(f4, num_bins, **head)
        self.fc_yaw = nnx.Linear(f4, num_bins, **head)
        self.fc_t = nnx.Linear(f4, 3, **head)
        self.fc_exp = nnx.Linear(f4, 3 * num_kp, **head)

    def __call__(self, image: jax.Array) -> dict[str, jax.Array]:
        out = nnx.relu(self.norm1(self.conv1(image)))
        out = nnx.max_pool(out, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        out = nnx.relu(self.norm2(self.conv2(out)))
        for block in self.block1:
            out = block(out)
        out = self.block2(nnx.relu(self.norm3(self.conv3(out))))
        for block in self.block3:
            out = block(out)
        out = self.block4(nnx.relu(self.norm4(self.conv4(out))))
        for block in self.block5:
            out = block(out)
        out = self.block6(nnx.relu(self.norm5(self.conv5(out))))
        for block in self.block7:
            out = block(out)
        out = out.mean(axis=(1, 2))
        # The released checkpoint's heads are wired crosswise: `fc_roll` predicts yaw
        # and `fc_yaw` predicts roll. Keep the wiring so converted weights mean the same.
        f32 = jnp.float32
        return {
            "yaw": self.fc_roll(out).astype(f32),
            "pitch": self.fc_pitch(out).astype(f32),
            "roll": self.fc_yaw(out).astype(f32),
            "t": self.fc_t(out).astype(f32),
            "exp": self.fc_exp(out).astype(f32),
        }


def bins_to_degrees(logits: jax.Array) -> jax.Array:
    """(B, 66) angle-bin logits -> (B,) degrees: softmax expectation * 3 - 99."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    idx = jnp.arange(logits.shape[-1], dtype=jnp.float32)
    return (probs * idx).sum(-1) * 3.0 - 99.0


def rotation_matrix(yaw: jax.Array, pitch: jax.Array, roll: jax.Array) -> jax.Array:
    """(B,) degrees -> (B, 3, 3) = R_x(pitch) @ R_y(yaw) @ R_z(roll)."""
    # The reference converts with 3.14 rather than pi; parity needs the same constant.
    yaw, pitch, roll = (a / 180.0 * 3.14 for a in (yaw, pitch, roll))
    one, zero = jnp.ones_like(yaw), jnp.zeros_like(yaw)

    def mat(rows):
        return jnp.stack([jnp.stack(r, -1) for r in rows], -2)

    pitch_mat = mat([[one, zero, zero],
                     [zero, jnp.cos(pitch), -jnp.sin(pitch)],
                     [zero, jnp.sin(pitch), jnp.cos(pitch)]])
    yaw_mat = mat([[jnp.cos(yaw), zero, jnp.sin(yaw)],
                   [zero, one, zero],
                   [-jnp.sin(yaw), zero, jnp.cos(yaw)]])
    roll_mat = mat([[jnp.cos(roll), -jnp.sin(roll), zero],
                    [jnp.sin(roll), jnp.cos(roll), zero],
                    [zero, zero, one]])
    return pitch_mat @ yaw_mat @ roll_mat


def head_pose_degrees(he: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {k: bins_to_degrees(he[k]) for k in ("yaw", "pitch", "roll")}


def transform_keypoints(kp_canonical: jax.Array, he: dict[str, jax.Array],
                        yaw=None, pitch=None, roll=None) -> jax.Array:
    """kp = R(yaw, pitch, roll) kp_canonical + t + expression.

    Angle overrides (degrees, scalar or (B,)) give free-view control; others come from
    the estimator's bins.
    """
    degrees = head_pose_degrees(he)
    batch = kp_canonical.shape[0]
    for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        if value is not None:
            degrees[name] = jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))
    rot = rotation_matrix(degrees["yaw"], degrees["pitch"], degrees["roll"])
    kp = jnp.einsum("bmp,bkp->bkm", rot, kp_canonical)
    kp = kp + he["t"][:, None, :]
    return kp + he["exp"].reshape(batch, -1, 3)
