"""The AdaSR update: pure functions of a typed train state (Flax examples' layout).

- `TrainState` (`asrth_jax.train_state`): what training updates, nested per network;
  checkpoints map it to their items in `asrth_jax.checkpoints`.
- `StepDefs` (`make_step_defs`): what is static (graph definitions, optimisers from
  `asrth_jax.optimizer`, the resolved loss weights), closed over with `functools.partial`.
- `init_state`, `train_step`, `eval_step`, `visual_step`: module-level and pure; the
  losses are one small function per family (reconstruction, adversarial,
  equivariance, pose), taught by the frozen networks and data truths of
  `asrth_jax.teachers`.
- `TrainSetup`: jits them with their shardings for one run and caches the
  ahead-of-time compiles (with a process barrier).

One call of `train_step` does the generator-side update (generator, keypoint detector and head-pose
estimator share one Adam: Adam is per-parameter, so one optimiser over the three
equals the reference's three optimisers with equal hyper-parameters) and then the
discriminator update on the detached prediction. Shardings are explicit: the batch
is split over the mesh axes ('data', 'fsdp'); parameters and optimiser state are
replicated or sharded over 'fsdp' (see `asrth_jax/sharding.py`). BatchNorm statistics
are means over the global batch because the step is written for the global array.

With `config.mesh.deterministic_reductions` the same step runs per device under
`shard_map` instead, and every sum across devices (gradients, losses, BatchNorm
statistics, the latter given to each BatchNorm explicitly) is `sharding.ordered_sum`:
the losses are then bit-equal whether the devices sit in one process or several.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from asrth_jax import losses, motion_metrics, reconstruction_eval, sharding
from asrth_jax.errors import ConfigError
from asrth_jax.models import adasr, blocks
from asrth_jax.models.head_pose import head_pose_degrees, transform_keypoints
from asrth_jax.models.hopenet import hopenet_preprocess
from asrth_jax.optimizer import check_lr_mults, make_optimizer
from asrth_jax.teachers import (
    CENTRE_KEY,
    LANDMARKS_KEY,
    MOVING_MASK_KEY,
    POSE_KEY,
    SOURCE_LANDMARKS_KEY,
    FrozenNetworks,
    headpose_weight,
    teacher_keys,
)
from asrth_jax.train_state import NetworkState, TrainState
from asrth_jax.transforms import TransformParams, sample_transform_params, transform_frame
from data_pipelines.coordinates import keypoint_frame

Batch = dict[str, jax.Array]
BATCH_KEYS = ("source", "source_lq", "driving")


def _at_this_trace(tree):
    """Fresh Variable objects for non-differentiated `jax.grad` inputs.

    Those enter the gradient trace as the outer trace's objects, which NNX refuses to
    mutate; rebuilding them lets BatchNorm and spectral norm update their state here.
    """
    return jax.tree.map(lambda x: x, tree)


# ==================================================================== the step's statics
@dataclasses.dataclass(frozen=True)
class StepDefs:
    """What is static inside the step functions: graph definitions, optimisers and
    the resolved loss weights (closed over by `functools.partial`, never traced)."""

    config: ml_collections.ConfigDict
    gen_def: nnx.GraphDef
    disc_def: nnx.GraphDef
    perceptual_def: nnx.GraphDef
    hopenet_def: nnx.GraphDef | None
    gen_tx: optax.GradientTransformation
    disc_tx: optax.GradientTransformation
    headpose_weight: float

    @property
    def pose_from_data(self) -> bool:
        """The head-pose loss is taught by the true poses the batch carries."""
        return bool(self.headpose_weight) and self.config.loss.headpose_teacher == "data"


def make_step_defs(config: ml_collections.ConfigDict, frozen: FrozenNetworks
                   ) -> tuple[StepDefs, dict[str, nnx.State]]:
    """The step's static parts and the frozen networks' state (a step argument)."""
    dtype = config.train.compute_dtype
    gen = adasr.abstract_generator(config.model, dtype=dtype, remat=config.train.remat)
    disc = adasr.abstract_discriminator(config.model, dtype=dtype)
    check_lr_mults(config.optim.lr_mults, nnx.state(gen, nnx.Param), nnx.state(disc, nnx.Param))
    perceptual_def, perceptual_state = nnx.split(frozen.perceptual)
    frozen_state = {"perceptual": perceptual_state}
    hopenet_def = None
    if frozen.hopenet is not None:
        hopenet_def, frozen_state["hopenet"] = nnx.split(frozen.hopenet)
    defs = StepDefs(
        config=config,
        gen_def=nnx.split(gen, nnx.Param, ...)[0],
        disc_def=nnx.split(disc, nnx.Param, ...)[0],
        perceptual_def=perceptual_def,
        hopenet_def=hopenet_def,
        gen_tx=make_optimizer(config.optim, config.train.grad_clip_norm),
        disc_tx=make_optimizer(config.optim, config.train.grad_clip_norm),
        headpose_weight=headpose_weight(config.loss, frozen.hopenet is not None))
    return defs, frozen_state


def init_state(defs: StepDefs, seed: jax.Array) -> TrainState:
    """Freshly initialised networks and optimisers with Flax's initialisers
    (`train.init="flax"`; pure: jit it). `TrainSetup.init_state` draws the default,
    PyTorch's initialisation, on the host instead (`host_networks`)."""
    # Weights from the cheap-to-compile rbg generator (see adasr._jit_init); the
    # train-time key stream stays threefry so it is identical on every backend.
    gen_key, disc_key = jax.random.split(jax.random.key(seed, impl="unsafe_rbg"))
    cfg = defs.config
    gen = adasr.build_generator(cfg.model, seed=gen_key, dtype=cfg.train.compute_dtype,
                                remat=cfg.train.remat, init="flax")
    disc = adasr.build_discriminator(cfg.model, seed=disc_key, dtype=cfg.train.compute_dtype,
                                     init="flax")
    _, gen_params, gen_rest = nnx.split(gen, nnx.Param, ...)
    _, disc_params, disc_rest = nnx.split(disc, nnx.Param, ...)
    return TrainState(
        step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed),
        generator_side=NetworkState(gen_params, gen_rest, defs.gen_tx.init(gen_params)),
        discriminator=NetworkState(disc_params, disc_rest, defs.disc_tx.init(disc_params)))


def host_networks(defs: StepDefs, seed: int) -> tuple[nnx.State, ...]:
    """(generator-side params, rest, discriminator params, rest) with PyTorch's
    initialisation, drawn on the host (`asrth_jax.models.torch_init`): NumPy arrays, no
    XLA program."""
    cfg = defs.config
    gen = adasr.build_generator(cfg.model, seed=seed, dtype=cfg.train.compute_dtype,
                                remat=cfg.train.remat, init="pytorch")
    disc = adasr.build_discriminator(cfg.model, seed=seed, dtype=cfg.train.compute_dtype,
                                     init="pytorch")
    return nnx.split(gen, nnx.Param, ...)[1:] + nnx.split(disc, nnx.Param, ...)[1:]


def models(defs: StepDefs, state: TrainState) -> tuple[nnx.Module, nnx.Module]:
    """Live modules (generator side, discriminator) holding the state's values."""
    return (nnx.merge(defs.gen_def, state.generator_side.params, state.generator_side.rest),
            nnx.merge(defs.disc_def, state.discriminator.params, state.discriminator.rest))


# ==================================================================== loss terms
# Each adds its weighted terms to `terms` in the order the total sums them.
def _reconstruction_terms(defs: StepDefs, frozen: dict[str, nnx.State], prediction: jax.Array,
                          driving: jax.Array, terms: dict[str, jax.Array]) -> None:
    cfg = defs.config.loss
    perceptual = nnx.merge(defs.perceptual_def, frozen["perceptual"])
    terms["perceptual"] = losses.perceptual_pyramid_loss(
        perceptual, prediction, driving, scales=tuple(cfg.perceptual_scales),
        layer_weights=tuple(cfg.perceptual))
    if cfg.reconstruction_l1:
        terms["reconstruction_l1"] = cfg.reconstruction_l1 * losses.l1_loss(prediction, driving)


def _adversarial_terms(defs: StepDefs, disc: nnx.Module, prediction: jax.Array,
                       driving: jax.Array, terms: dict[str, jax.Array]) -> None:
    cfg = defs.config.loss
    if not cfg.generator_gan:
        return
    fake = disc(prediction)
    real = disc(driving)
    terms["generator_gan"] = cfg.generator_gan * losses.generator_gan_loss(
        fake["prediction_maps"], defs.config.train.gan_mode)
    if any(cfg.feature_matching):
        fm = jnp.zeros((), jnp.float32)
        for real_maps, fake_maps in zip(real["feature_maps"], fake["feature_maps"],
                                        strict=True):
            real_maps = [jax.lax.stop_gradient(m) for m in real_maps]
            fm = fm + losses.feature_matching_loss(real_maps, fake_maps,
                                                   tuple(cfg.feature_matching))
        terms["feature_matching"] = fm


def equivariance_transforms(loss: ml_collections.ConfigDict, key: jax.Array, local_batch: int,
                            batch_shards: int):
    """Random warps drawn for the global batch, then this shard's rows: each example
    gets the same warp however the batch is split."""
    params = sample_transform_params(key, local_batch * batch_shards, loss.sigma_affine,
                                     loss.sigma_tps, loss.points_tps)
    if batch_shards == 1:
        return params
    start = jax.lax.axis_index(sharding.BATCH_AXES) * local_batch
    rows = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=start,
                             slice_size=local_batch)
    return params._replace(theta=rows(params.theta), control_params=rows(params.control_params))


def _equivariance_term(defs: StepDefs, out: dict[str, Any], params: TransformParams,
                       he_transformed: dict[str, jax.Array]) -> jax.Array:
    """The weighted equivariance term: the driving keypoints against those of the warped
    driving frames, mapped back through the warp."""
    kp_transformed = transform_keypoints(out["kp_canonical"], he_transformed)
    return defs.config.loss.equivariance_value * losses.equivariance_value_loss(
        out["kp_driving"], kp_transformed, params)


def _keypoint_and_motion_terms(defs: StepDefs, frozen: dict[str, nnx.State],
                               out: dict[str, Any], batch: Batch, driving: jax.Array,
                               terms: dict[str, jax.Array]) -> None:
    """The keypoint prior, the head-pose and expression terms, and the teachers of the
    keypoints and the dense motion that synthetic data gives (`SYNTHETIC_TRUTH_TERMS`)."""
    cfg = defs.config.loss
    if cfg.keypoint_prior:
        terms["keypoint_prior"] = cfg.keypoint_prior * losses.keypoint_prior_loss(
            out["kp_driving"], cfg.keypoint_margin, cfg.keypoint_depth)
    if defs.headpose_weight:
        if defs.pose_from_data:
            angles = batch[POSE_KEY]
            target = {name: angles[:, i] for i, name in enumerate(("yaw", "pitch", "roll"))}
        else:
            hopenet = nnx.merge(defs.hopenet_def, frozen["hopenet"])
            target = head_pose_degrees(hopenet(hopenet_preprocess(driving)))
        terms["headpose"] = defs.headpose_weight * losses.headpose_loss(
            out["he_driving"], target)
    if cfg.head_translation:
        terms["head_translation"] = cfg.head_translation * losses.head_translation_loss(
            out["he_driving"]["t"], batch[CENTRE_KEY])
    if cfg.landmark_keypoints:
        width_height = jnp.asarray(driving.shape[2:0:-1], jnp.float32)
        landmarks = keypoint_frame(batch[LANDMARKS_KEY], width_height)
        terms["landmark_keypoints"] = cfg.landmark_keypoints * losses.landmark_keypoint_loss(
            out["kp_driving"], landmarks)
    if cfg.landmark_motion:
        terms["landmark_motion"] = cfg.landmark_motion * losses.landmark_motion_loss(
            out["deformation"], batch[SOURCE_LANDMARKS_KEY], batch[LANDMARKS_KEY],
            driving.shape[1:3])
    if cfg.background_motion:
        terms["background_motion"] = cfg.background_motion * losses.background_motion_loss(
            out["deformation"], batch[MOVING_MASK_KEY])
    if cfg.expression:
        terms["expression"] = cfg.expression * losses.expression_loss(out["he_driving"]["exp"])


def _merge_for_training(defs: StepDefs, graph_def: nnx.GraphDef, params: nnx.State,
                        rest: nnx.State, num_devices: int) -> nnx.Module:
    """A live module in train mode, its BatchNorm running variance as the config says;
    per device (`num_devices` > 1), its BatchNorm statistics are device means in device
    order."""
    module = nnx.merge(graph_def, params, rest)
    module.train()
    blocks.set_running_variance(module, defs.config.train.batchnorm_running_var)
    if num_devices > 1:
        blocks.set_statistics_mean(
            module, functools.partial(_device_mean, num_devices=num_devices), num_devices)
    return module


def generator_loss(gen_params: nnx.State, state: TrainState, batch: Batch,
                   frozen: dict[str, nnx.State], key: jax.Array, *, defs: StepDefs,
                   num_devices: int = 1):
    """The generator side's weighted loss (differentiated in `gen_params`), with aux
    (terms, new BatchNorm statistics, new spectral vectors, prediction). Per device
    (`num_devices` > 1, see `train_step`) the batch is this device's rows."""
    gen_rest, disc_params, disc_rest = _at_this_trace(
        (state.generator_side.rest, state.discriminator.params, state.discriminator.rest))
    gen = _merge_for_training(defs, defs.gen_def, gen_params, gen_rest, num_devices)
    disc = _merge_for_training(defs, defs.disc_def, disc_params, disc_rest, num_devices)
    # As in the reference, the discriminator is in train mode here too: each of its
    # two calls advances the spectral-norm power iteration (4 per step in all).
    source = batch["source"].astype(jnp.float32)
    driving = batch["driving"].astype(jnp.float32)
    # The head-pose estimator's calls (source, driving, the equivariance pass's warped
    # driving frames: the reference's order), as one call when the config says so: XLA
    # then compiles the estimator once.
    pose_images = [source, driving]
    transform = None
    if defs.config.loss.equivariance_value:
        transform = equivariance_transforms(defs.config.loss, key, driving.shape[0],
                                            num_devices)
        pose_images.append(transform_frame(transform, driving))
    if defs.config.train.batched_head_pose:
        poses = gen.head_poses(*pose_images)
    else:
        poses = [gen.he_estimator(images) for images in pose_images]
    out = gen(source, driving, source_lq=batch["source_lq"].astype(jnp.float32),
              poses=(poses[0], poses[1]))
    prediction = out["prediction"]
    terms: dict[str, jax.Array] = {}
    _reconstruction_terms(defs, frozen, prediction, driving, terms)
    _adversarial_terms(defs, disc, prediction, driving, terms)
    if transform is not None:  # equivariance_value is on
        terms["equivariance_value"] = _equivariance_term(defs, out, transform, poses[-1])
    _keypoint_and_motion_terms(defs, frozen, out, batch, driving, terms)
    total = sum(terms.values())
    new_gen_rest = nnx.state(gen, nnx.Not(nnx.Param))
    new_disc_rest = nnx.state(disc, nnx.Not(nnx.Param))
    return total, (terms, new_gen_rest, new_disc_rest, prediction)


def discriminator_loss(disc_params: nnx.State, disc_rest: nnx.State, driving: jax.Array,
                       prediction: jax.Array, *, defs: StepDefs, num_devices: int = 1):
    """The discriminator's weighted GAN loss, with its new spectral vectors as aux."""
    disc = _merge_for_training(defs, defs.disc_def, disc_params, _at_this_trace(disc_rest),
                               num_devices)
    # The reference's order: the fake batch first, then the real one (the power
    # iteration runs once per call, so the order changes the normalised weights).
    fake = disc(jax.lax.stop_gradient(prediction))
    real = disc(driving)
    loss = defs.config.loss.discriminator_gan * losses.discriminator_gan_loss(
        real["prediction_maps"], fake["prediction_maps"], defs.config.train.gan_mode)
    return loss, nnx.state(disc, nnx.Not(nnx.Param))


# ==================================================================== steps
def _device_mean(tree: Any, num_devices: int) -> Any:
    """Inside `shard_map`: the device mean of a per-device pytree, in device order."""
    return jax.tree.map(lambda x: x / num_devices, sharding.ordered_sum(tree))


def train_step(defs: StepDefs, state: TrainState, batch: Batch, frozen: dict[str, nnx.State],
               *, num_devices: int = 1) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update: the generator side, then the discriminator on the detached
    prediction. With `num_devices` > 1 this runs per device under `shard_map`
    (`config.mesh.deterministic_reductions`): the batch is this device's rows, and every
    cross-device sum (gradients, losses, BatchNorm statistics) is in device order."""
    device_mean = functools.partial(_device_mean, num_devices=num_devices)
    per_device = num_devices > 1
    rng, key = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(
        functools.partial(generator_loss, defs=defs, num_devices=num_devices), has_aux=True)
    (gen_loss, (terms, gen_rest, disc_rest, prediction)), gen_grads = grad_fn(
        state.generator_side.params, state, batch, frozen, key)
    if per_device:
        gen_loss, terms, gen_grads = device_mean((gen_loss, terms, gen_grads))
    updates, gen_opt = defs.gen_tx.update(gen_grads, state.generator_side.opt,
                                          state.generator_side.params)
    gen_params = optax.apply_updates(state.generator_side.params, updates)

    scalars = dict(terms)
    scalars["generator_total"] = gen_loss
    scalars["generator_grad_norm"] = optax.global_norm(gen_grads)
    disc_params, disc_opt = state.discriminator.params, state.discriminator.opt
    if defs.config.loss.generator_gan:
        # From the spectral vectors the generator pass advanced.
        (disc_loss, disc_rest), disc_grads = jax.value_and_grad(
            functools.partial(discriminator_loss, defs=defs, num_devices=num_devices),
            has_aux=True)(
                disc_params, disc_rest, batch["driving"].astype(jnp.float32), prediction)
        if per_device:
            disc_loss, disc_grads = device_mean((disc_loss, disc_grads))
        updates, disc_opt = defs.disc_tx.update(disc_grads, disc_opt, disc_params)
        disc_params = optax.apply_updates(disc_params, updates)
        scalars["discriminator_gan"] = disc_loss
    new_state = state.replace(
        step=state.step + 1, rng=rng,
        generator_side=NetworkState(gen_params, gen_rest, gen_opt),
        discriminator=NetworkState(disc_params, disc_rest, disc_opt))
    return new_state, jax.tree.map(lambda x: x.astype(jnp.float32), scalars)


def eval_step(defs: StepDefs, state: TrainState, batch: Batch,
              mask: jax.Array) -> dict[str, jax.Array]:
    """The reconstruction evaluator's step (`asrth_jax.reconstruction_eval`) in eval mode
    (running statistics): its masked sums over the global batch of every score, plus the
    count. Replicated, so every host can read them."""
    gen, _ = models(defs, state)
    gen.eval()
    outputs = reconstruction_eval.predict(gen, batch)
    return reconstruction_eval.masked_sums(reconstruction_eval.frame_scores(outputs, batch),
                                           mask)


def visual_step(defs: StepDefs, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Eval-mode outputs for image grids (prediction, occlusion, keypoints, and the
    deformation for the landmark-transfer column)."""
    gen, _ = models(defs, state)
    gen.eval()
    out = gen(batch["source"], batch["driving"], source_lq=batch["source_lq"])
    return {k: out[k] for k in ("prediction", "occlusion_map", "kp_source", "kp_driving",
                                "deformation")}


# ==================================================================== jitted, sharded
class TrainSetup:
    """What is static for a run, and the step functions jitted with its shardings:
    `train_step(state, batch, frozen_state)`, `eval_step(state, batch, mask)`,
    `visual_step(state, batch)`; `compiled` caches their ahead-of-time compiles."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh,
                 frozen: FrozenNetworks | None = None):
        self.config = config
        self.mesh = mesh
        self.frozen = frozen or FrozenNetworks.from_config(config.loss)
        self.defs, self.frozen_state = make_step_defs(config, self.frozen)
        self.batch_sharding = NamedSharding(mesh, P(sharding.BATCH_AXES))
        self.replicated = NamedSharding(mesh, P())
        self.state_sharding = sharding.state_shardings(
            self.abstract_state(), mesh, shard_params=config.mesh.shard_params)
        frozen_sharding = jax.tree.map(lambda _: self.replicated, self.frozen_state)
        if config.mesh.deterministic_reductions:
            step = jax.shard_map(
                functools.partial(train_step, self.defs, num_devices=mesh.devices.size),
                mesh=mesh, in_specs=(P(), P(sharding.BATCH_AXES), P()), out_specs=(P(), P()),
                check_vma=False)
        else:
            step = functools.partial(train_step, self.defs)
        self.train_step = jax.jit(
            step, in_shardings=(self.state_sharding, self.batch_sharding, frozen_sharding),
            out_shardings=(self.state_sharding, self.replicated), donate_argnums=(0,))
        self.eval_step = jax.jit(
            functools.partial(eval_step, self.defs),
            in_shardings=(self.state_sharding, self.batch_sharding, self.batch_sharding),
            out_shardings=self.replicated)
        # Replicated output: every host may fetch it (only the chief writes images).
        self.visual_step = jax.jit(functools.partial(visual_step, self.defs),
                                   out_shardings=self.replicated)
        self._compiled: dict[str, Any] = {}
        self._jitted: dict[str, Any] = {}  # the init programs, built once per run

    @property
    def headpose_weight(self) -> float:
        return self.defs.headpose_weight

    def compiled(self, name: str, jitted, *args):
        """Ahead-of-time compiled `jitted` for these arguments, cached by `name`.

        With several processes, compile times differ (one may hit the persistent cache,
        another not) and the first collective of a program waits only ~30 s for its
        peers; so every process compiles first and then meets the others at a
        coordination-service barrier that allows for slow compiles.
        """
        if name not in self._compiled:
            self._compiled[name] = jitted.lower(*args).compile()
            sharding.process_barrier(f"compiled_{name}")
        return self._compiled[name]

    def abstract_state(self, with_shardings: bool = False) -> TrainState:
        """Shapes and dtypes of the state (and its shardings, once they are known)."""
        abstract = jax.eval_shape(functools.partial(init_state, self.defs),
                                  jnp.zeros((), jnp.int32))
        if not with_shardings:
            return abstract
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract, self.state_sharding)

    def init_state(self, seed: int) -> TrainState:
        """Freshly initialised state with its shardings; the same values on every mesh.

        `train.init="pytorch"` (the paper configs): the networks are drawn on the host
        and placed shard by shard; only the optimiser's zeros are a (small) program.
        `"flax"`: one program, initialised replicated, then resharded, so random bits do
        not depend on how the mesh partitions it.
        """
        if self.config.train.init == "flax":
            if "flax_init" not in self._jitted:
                self._jitted["flax_init"] = jax.jit(functools.partial(init_state, self.defs),
                                                    out_shardings=self.replicated)
            state = self._jitted["flax_init"](jnp.asarray(seed, jnp.int32))
            return jax.device_put(state, self.state_sharding)
        gen_sharding = self.state_sharding.generator_side
        disc_sharding = self.state_sharding.discriminator
        gen_params, gen_rest, disc_params, disc_rest = (
            sharding.place(tree, tree_sharding) for tree, tree_sharding in zip(
                host_networks(self.defs, seed),
                (gen_sharding.params, gen_sharding.rest, disc_sharding.params,
                 disc_sharding.rest), strict=True))
        if "optimizer_init" not in self._jitted:
            self._jitted["optimizer_init"] = jax.jit(
                lambda gen, disc: (self.defs.gen_tx.init(gen), self.defs.disc_tx.init(disc)),
                out_shardings=(gen_sharding.opt, disc_sharding.opt))
        gen_opt, disc_opt = self._jitted["optimizer_init"](gen_params, disc_params)
        step, rng = sharding.place((np.zeros((), np.int32), np.asarray(jax.random.PRNGKey(seed))),
                                   (self.state_sharding.step, self.state_sharding.rng))
        return TrainState(step=step, rng=rng,
                          generator_side=NetworkState(gen_params, gen_rest, gen_opt),
                          discriminator=NetworkState(disc_params, disc_rest, disc_opt))

    def shard_batch(self, local_batch: dict[str, Any]) -> Batch:
        """Per-host numpy batch -> global jax arrays split over the mesh.

        Takes the images, plus what the teachers that are on read (`teacher_keys`) where
        the batch has it (evaluation batches need none), plus the ground truth of the
        motion metrics where the evaluation batch carries it."""
        wanted = teacher_keys(self.config.loss, self.defs.pose_from_data)
        missing = [k for k in wanted if k not in local_batch]
        if missing and "record_key" in local_batch:  # a training batch lacks a teacher's truth
            raise ConfigError(
                f"the training data has no {missing[0]!r}, which a loss teacher that is on "
                "reads (config.loss.landmark_* need a dataset prepared with "
                "`data_pipelines.prepare --track-faces`); prepare it so or set that "
                "loss weight to 0")
        keys = BATCH_KEYS + tuple(k for k in wanted if k in local_batch)
        if all(k in local_batch for k in motion_metrics.TRUTH_KEYS):  # an evaluation batch
            keys += tuple(k for k in motion_metrics.TRUTH_KEYS if k not in keys)
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, local_batch[k])
                for k in keys}
