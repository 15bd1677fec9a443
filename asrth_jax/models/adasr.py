"""The AdaSR networks built from a config, and the one render path.

`AdaSRGenerator` owns "encode a source, drive frames": `source_state` (once per
source), `driving_keypoints` (with an optional head-pose override: free view), `render`
(the decoder at given keypoints) and `drive` (the two in one, as training calls it).
Training, the periodic evaluation, `inference.Animator` and the benchmark all use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from asrth_jax.errors import ConfigError
from asrth_jax.models import blocks, torch_init
from asrth_jax.models.discriminator import MultiScaleDiscriminator
from asrth_jax.models.generator import OcclusionAwareSPADEGenerator
from asrth_jax.models.head_pose import HEEstimator, head_pose_degrees, transform_keypoints
from asrth_jax.models.keypoint_detector import KPDetector

NETWORKS = ("generator", "kp_detector", "he_estimator", "discriminator")


def _dtype(name: str | None):
    return None if name in (None, "float32") else jnp.dtype(name)


class AdaSRGenerator(nnx.Module):
    """Everything trained with the generator loss: G, keypoint and head-pose nets."""

    def __init__(self, model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs,
                 dtype: str | None = None, remat: bool = False):
        common = model_config.common
        self.image_channel = common.image_channel
        self.size_multiple = required_multiple(model_config)
        dt = _dtype(dtype)
        self.generator = OcclusionAwareSPADEGenerator(
            image_channel=common.image_channel, feature_channel=common.feature_channel,
            num_kp=common.num_kp, remat=remat, rngs=rngs, dtype=dt,
            dense_motion_params=dict(model_config.generator.dense_motion),
            **{k: v for k, v in model_config.generator.items() if k != "dense_motion"})
        self.kp_detector = KPDetector(num_kp=common.num_kp, image_channel=common.image_channel,
                                      rngs=rngs, dtype=dt, **model_config.kp_detector)
        he = dict(model_config.he_estimator)
        norm = blocks.norm_layer(he.pop("norm"))
        self.he_estimator = HEEstimator(num_kp=common.num_kp,
                                        image_channel=common.image_channel, norm=norm,
                                        rngs=rngs, dtype=dt,
                                        **{k: tuple(v) if isinstance(v, list) else v
                                           for k, v in he.items()})

    def head_poses(self, *images: jax.Array) -> list[dict[str, jax.Array]]:
        """The head-pose estimator's outputs for several equal batches of images, as one
        call: XLA compiles the estimator once, not once per batch. Each batch keeps its
        own BatchNorm statistics, folded in the order given, so the values are those of
        one call per batch."""
        if len(images) == 1:
            return [self.he_estimator(images[0])]
        blocks.set_statistics_groups(self.he_estimator, len(images))
        try:
            out = self.he_estimator(blocks.interleave(images))
        finally:
            blocks.set_statistics_groups(self.he_estimator, 1)
        split = {name: blocks.deinterleave(value, len(images)) for name, value in out.items()}
        return [{name: split[name][g] for name in out} for g in range(len(images))]

    def source_state(self, source: jax.Array, source_lq: jax.Array | None = None,
                     he: dict[str, jax.Array] | None = None) -> dict:
        """What a source contributes once per video: canonical kp, pose, feature volume.

        AdaSR: keypoints and pose come from the clean source; the appearance volume is
        encoded from `source_lq` during training (the degraded copy). `he`: the source's
        pose when the caller has it already (`head_poses`).
        """
        check_image_shape(source.shape, self.image_channel, self.size_multiple)
        kp_canonical = self.kp_detector(source)
        if he is None:
            he = self.he_estimator(source)
        return {
            "kp_canonical": kp_canonical,
            "he": he,
            "kp": transform_keypoints(kp_canonical, he),
            "feature_3d": self.generator.encode_source(source if source_lq is None else source_lq),
        }

    def __call__(self, source: jax.Array, driving: jax.Array,
                 source_lq: jax.Array | None = None,
                 poses: tuple[dict, dict] | None = None) -> dict[str, Any]:
        """`poses`: the source's and the driving frames' estimator outputs when the caller
        has them (`head_poses`)."""
        he_source, he_driving = (None, None) if poses is None else poses
        return self.drive(self.source_state(source, source_lq, he_source), driving,
                          he_driving)

    def driving_keypoints(self, src: dict, driving: jax.Array,
                          pose_override: tuple[jax.Array, jax.Array] | None = None,
                          he: dict[str, jax.Array] | None = None
                          ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(B, K, 3) keypoints of the source's canonical keypoints in each driving frame's
        pose and expression, and that pose. `pose_override` (free view): (angles (3,)
        yaw, pitch, roll in degrees, override (3,) bool), the angles that replace the
        estimate. A source of batch 1 serves every frame. `he`: the estimator's output
        for `driving` when the caller has it."""
        if he is None:
            he = self.he_estimator(driving)
        kp_canonical = _tile(src["kp_canonical"], driving.shape[0])
        if pose_override is None:
            return transform_keypoints(kp_canonical, he), he
        angles, override = pose_override
        degrees = head_pose_degrees(he)
        yaw, pitch, roll = (jnp.where(override[i], angles[i], degrees[name])
                            for i, name in enumerate(("yaw", "pitch", "roll")))
        return transform_keypoints(kp_canonical, he, yaw=yaw, pitch=pitch, roll=roll), he

    def render(self, src: dict, kp_driving: jax.Array) -> dict[str, Any]:
        """The decoder's output (prediction, occlusion, deformation, ...) for the encoded
        source moved from its keypoints to `kp_driving` (B, K, 3)."""
        batch = kp_driving.shape[0]
        return self.generator.decode(_tile(src["feature_3d"], batch), kp_driving,
                                     _tile(src["kp"], batch))

    def drive(self, src: dict, driving: jax.Array,
              he_driving: dict[str, jax.Array] | None = None) -> dict[str, Any]:
        """Renders an encoded source (`source_state`) in the pose of `driving`."""
        kp_driving, he_driving = self.driving_keypoints(src, driving, he=he_driving)
        out = self.render(src, kp_driving)
        out.update(kp_canonical=src["kp_canonical"], kp_source=src["kp"],
                   kp_driving=kp_driving, he_source=src["he"], he_driving=he_driving)
        return out


def _tile(x: jax.Array, batch: int) -> jax.Array:
    """`x` with its batch axis broadcast to `batch` (unchanged when it is already)."""
    return jnp.broadcast_to(x, (batch,) + x.shape[1:])


def _jit_init(make: Callable[[nnx.Rngs], nnx.Module], seed: int | jax.Array) -> nnx.Module:
    """Builds a module; an int seed initialises it in one compiled program.

    Eager NNX construction dispatches every initializer separately, and compiling
    threefry for hundreds of tensors is slow on CPU; the counter-based `unsafe_rbg`
    generator compiles ~3x faster. Initial weights need no cryptographic quality.
    A key (inside a trace) builds directly.
    """
    if not isinstance(seed, int):
        return make(blocks.traceable_rngs(seed))
    graphdef, _ = nnx.split(_abstract(make))
    state = jax.jit(lambda key: nnx.state(make(blocks.traceable_rngs(key))))(
        jax.random.key(seed, impl="unsafe_rbg"))
    return nnx.merge(graphdef, state)


def _abstract(make: Callable[[nnx.Rngs], nnx.Module]) -> nnx.Module:
    """The module with shapes and dtypes only, traced once (plain `nnx.Rngs` would cost
    a quadratic trace, see `blocks.traceable_rngs`)."""
    return nnx.eval_shape(lambda: make(blocks.traceable_rngs(0)))


def _make_generator(model_config: ml_collections.ConfigDict, dtype: str | None,
                    remat: bool) -> Callable[[nnx.Rngs], AdaSRGenerator]:
    return lambda rngs: AdaSRGenerator(model_config, rngs=rngs, dtype=dtype, remat=remat)


def _make_discriminator(model_config: ml_collections.ConfigDict, dtype: str | None
                        ) -> Callable[[nnx.Rngs], MultiScaleDiscriminator]:
    disc = dict(model_config.discriminator)
    disc["scales"] = tuple(disc["scales"])
    return lambda rngs: MultiScaleDiscriminator(
        num_channels=model_config.common.image_channel, rngs=rngs, dtype=_dtype(dtype), **disc)


INITS = ("pytorch", "flax")  # `train.init`: see `_build`


def _build(make: Callable[[nnx.Rngs], nnx.Module], seed: int | jax.Array, init: str,
           network: str) -> nnx.Module:
    """A module with fresh weights. "pytorch" (an int seed): PyTorch's default
    initialisation drawn on the host (`torch_init`), no XLA program at all; "flax" (or a
    key inside a trace): Flax's initialisers (`_jit_init`)."""
    if init not in INITS:
        raise ConfigError(f"config.train.init={init!r} is not an initialisation; use one of "
                          f"{', '.join(INITS)}")
    if init == "flax" or not isinstance(seed, int):
        return _jit_init(make, seed)
    module = _abstract(make)
    nnx.update(module, torch_init.torch_default_state(module, seed, network))
    return module


def build_generator(model_config: ml_collections.ConfigDict, seed: int | jax.Array = 0,
                    dtype: str | None = None, remat: bool = False,
                    init: str = "pytorch") -> AdaSRGenerator:
    return _build(_make_generator(model_config, dtype, remat), seed, init, "generator")


def abstract_generator(model_config: ml_collections.ConfigDict, dtype: str | None = None,
                       remat: bool = False) -> AdaSRGenerator:
    """`build_generator`'s module with shapes only: for restoring weights into, or for a
    program's structure, without initialising any."""
    return _abstract(_make_generator(model_config, dtype, remat))


def build_discriminator(model_config: ml_collections.ConfigDict, seed: int | jax.Array = 1,
                        dtype: str | None = None, init: str = "pytorch"
                        ) -> MultiScaleDiscriminator:
    return _build(_make_discriminator(model_config, dtype), seed, init, "discriminator")


def abstract_discriminator(model_config: ml_collections.ConfigDict,
                           dtype: str | None = None) -> MultiScaleDiscriminator:
    """`build_discriminator`'s module with shapes only."""
    return _abstract(_make_discriminator(model_config, dtype))


def required_multiple(model_config: ml_collections.ConfigDict) -> int:
    """Image sides must be multiples of this for every downsampling path to be exact."""
    gen = model_config.generator
    kp = model_config.kp_detector
    appearance = 2**gen.num_down_blocks * 2**gen.dense_motion.num_blocks
    keypoints = round(1 / kp.scale_factor) * 2**kp.num_blocks
    return max(appearance, keypoints, 32)  # 32: the head-pose trunk's total stride


def validate_image_shape(model_config: ml_collections.ConfigDict, shape: tuple) -> None:
    """One clear error for images the networks cannot take."""
    check_image_shape(shape, model_config.common.image_channel, required_multiple(model_config))


def check_image_shape(shape: tuple, channels: int, multiple: int) -> None:
    if len(shape) != 4 or shape[-1] != channels:
        raise ValueError(f"expected images of shape (batch, height, width, {channels}), "
                         f"got {tuple(shape)}")
    if shape[1] % multiple or shape[2] % multiple:
        raise ConfigError(f"image size {shape[1]}x{shape[2]} is not a multiple of {multiple}; "
                         f"resize to the config's image_size (e.g. {multiple * 8})")


def count_params(module: nnx.Module) -> int:
    """Trainable parameters (spectral-norm vectors and BatchNorm statistics excluded)."""
    state = nnx.state(module, nnx.Param)
    return sum(int(x.size) for x in jax.tree.leaves(state))
