"""The AdaSR update: one jitted, pure function over `nnx.split` state.

One call does the generator-side update (generator, keypoint detector and head-pose
estimator share one Adam: Adam is per-parameter, so one optimiser over the three
equals the reference's three optimisers with equal hyper-parameters) and then the
discriminator update on the detached prediction. Shardings are explicit: the batch
is split over the mesh axes ('data', 'fsdp'); parameters and optimiser state are
replicated or sharded over 'fsdp' (see `asrth_jax/sharding.py`). BatchNorm statistics
are means over the global batch because the step is written for the global array.

With `config.mesh.deterministic_reductions` the same step runs per device under
`shard_map` instead, and every sum across devices (gradients, losses, BatchNorm
statistics) is `sharding.ordered_sum`: the losses are then bit-equal whether the
devices sit in one process or several.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from asrth_jax import losses, motion_metrics, sharding
from asrth_jax.models import adasr, blocks
from asrth_jax.models.head_pose import head_pose_degrees, transform_keypoints
from asrth_jax.models.hopenet import hopenet_preprocess
from asrth_jax.transforms import sample_transform_params, transform_frame

Batch = dict[str, jax.Array]
BATCH_KEYS = ("source", "source_lq", "driving")
POSE_KEY = "driving_pose"  # (B, 3) true yaw, pitch, roll in degrees
CENTRE_KEY = "driving_centre"  # (B, 2) true head centre x, y in the keypoint frame
HEADPOSE_TEACHERS = ("hopenet", "data")


def lr_schedule(optim: ml_collections.ConfigDict) -> optax.Schedule:
    """Step decay x`decay_factor` at each milestone; the optimiser and the log share it."""
    return optax.piecewise_constant_schedule(
        optim.lr, {int(m): float(optim.decay_factor) for m in optim.decay_milestones})


def make_optimizer(optim: ml_collections.ConfigDict, grad_clip_norm: float
                   ) -> optax.GradientTransformation:
    """Adam(b1, b2) on `lr_schedule`, with optional global-norm clipping."""
    parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm > 0 else []
    parts.append(optax.adam(lr_schedule(optim), b1=optim.b1, b2=optim.b2))
    return optax.chain(*parts)


@dataclasses.dataclass
class FrozenNetworks:
    """Fixed networks the losses use: perceptual trunk and optional HopeNet teacher."""

    perceptual: nnx.Module
    hopenet: nnx.Module | None

    @classmethod
    def from_config(cls, loss: ml_collections.ConfigDict) -> FrozenNetworks:
        from asrth_jax.models.vgg import make_perceptual_network

        check_teacher_files(loss)
        perceptual = make_perceptual_network(loss.perceptual_network, loss.vgg19_weights or None)
        hopenet = None
        if loss.hopenet_weights:
            from asrth_jax.models.hopenet import load_hopenet_npz

            hopenet = load_hopenet_npz(loss.hopenet_weights)
            hopenet.eval()
        return cls(perceptual, hopenet)


def check_headpose_teacher(loss: ml_collections.ConfigDict, data_kind: str) -> None:
    """One-line errors for a teacher that is not known or that the data cannot give."""
    if loss.headpose_teacher not in HEADPOSE_TEACHERS:
        raise ValueError(f"config.loss.headpose_teacher must be one of {HEADPOSE_TEACHERS}, "
                         f"got {loss.headpose_teacher!r}")
    if loss.headpose_teacher == "data" and loss.headpose and data_kind != "synthetic":
        raise ValueError(f"config.loss.headpose_teacher='data' needs true head poses, which "
                         f"only data.kind='synthetic' has (got {data_kind!r}); use 'hopenet' "
                         f"with config.loss.hopenet_weights")
    if loss.head_translation and data_kind != "synthetic":
        raise ValueError(f"config.loss.head_translation={loss.head_translation} needs true "
                         f"head centres, which only data.kind='synthetic' has (got "
                         f"{data_kind!r}); set --config.loss.head_translation=0")


def _missing(path: str) -> str | None:
    """Why a teacher file cannot be read, or None."""
    if not path:
        return "is empty"
    if not os.path.isfile(path):
        return f"names {path}, which does not exist"
    return None


def check_teacher_files(loss: ml_collections.ConfigDict) -> None:
    """One-line ValueError when the recipe needs a pretrained teacher whose file is not
    there (before any data or compile): the convert command that makes it, or the
    override that trains without it. Nothing is dropped silently."""
    problems = []
    if loss.perceptual_network == "vgg19" and (why := _missing(loss.vgg19_weights)):
        problems.append(
            f"config.loss.perceptual_network='vgg19' needs config.loss.vgg19_weights, which "
            f"{why}: make it with `python -m asrth_jax.convert --vgg19 FILE --out DIR` and "
            "pass --config.loss.vgg19_weights=DIR/vgg19.npz, or train with the substitute "
            "--config.loss.perceptual_network=lpips_vgg16")
    if loss.headpose and loss.headpose_teacher == "hopenet" and \
            (why := _missing(loss.hopenet_weights)):
        problems.append(
            f"config.loss.headpose={loss.headpose} with the HopeNet teacher needs "
            f"config.loss.hopenet_weights, which {why}: make it with `python -m "
            "asrth_jax.convert --hopenet FILE --out DIR` and pass "
            "--config.loss.hopenet_weights=DIR/hopenet.npz, or train without it: "
            "--config.loss.headpose=0")
    if problems:
        raise ValueError("; ".join(problems))


def check_teachers(loss: ml_collections.ConfigDict, data_kind: str) -> None:
    """Every teacher the loss config names is known, available for this data, and its
    weights file exists (one-line ValueError otherwise)."""
    check_headpose_teacher(loss, data_kind)
    check_teacher_files(loss)


def headpose_weight(loss: ml_collections.ConfigDict, has_teacher: bool) -> float:
    """The head-pose loss needs a teacher (HopeNet or true poses). Training refuses to
    start without it (`check_teacher_files`); a caller that builds its own frozen
    networks without HopeNet (the benchmark's random trunks) gets 0 and a warning."""
    if loss.headpose_teacher == "data":
        return float(loss.headpose)
    if loss.headpose and not has_teacher:
        logging.warning("no HopeNet teacher was given: head-pose loss weight %s is 0 in "
                        "this trainer", loss.headpose)
        return 0.0
    return float(loss.headpose)


def _at_this_trace(tree):
    """Fresh Variable objects for non-differentiated `jax.grad` inputs.

    Those enter the gradient trace as the outer trace's objects, which NNX refuses to
    mutate; rebuilding them lets BatchNorm and spectral norm update their state here.
    """
    return jax.tree.map(lambda x: x, tree)


class Trainer:
    """Holds what is static for a run (graph definitions, optimisers, shardings) and
    builds the jitted train and eval steps."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh,
                 frozen: FrozenNetworks | None = None):
        self.config = config
        self.mesh = mesh
        dtype = config.train.compute_dtype
        gen = nnx.eval_shape(lambda: adasr.build_generator(
            config.model, dtype=dtype, remat=config.train.remat))
        disc = nnx.eval_shape(lambda: adasr.build_discriminator(config.model, dtype=dtype))
        self.gen_def, _, _ = nnx.split(gen, nnx.Param, ...)
        self.disc_def, _, _ = nnx.split(disc, nnx.Param, ...)
        self.frozen = frozen or FrozenNetworks.from_config(config.loss)
        self.perceptual_def, perceptual_state = nnx.split(self.frozen.perceptual)
        self.frozen_state = {"perceptual": perceptual_state}
        if self.frozen.hopenet is not None:
            self.hopenet_def, self.frozen_state["hopenet"] = nnx.split(self.frozen.hopenet)
        self.headpose_weight = headpose_weight(config.loss, self.frozen.hopenet is not None)
        self.pose_from_data = bool(self.headpose_weight) and \
            config.loss.headpose_teacher == "data"
        self.gen_tx = make_optimizer(config.optim, config.train.grad_clip_norm)
        self.disc_tx = make_optimizer(config.optim, config.train.grad_clip_norm)

        sharding.check_deterministic_reductions(config.mesh)
        self.batch_sharding = NamedSharding(mesh, P(sharding.BATCH_AXES))
        self.replicated = NamedSharding(mesh, P())
        abstract = jax.eval_shape(self._init_state, jnp.zeros((), jnp.int32))
        self.state_sharding = sharding.state_shardings(
            abstract, mesh, shard_params=config.mesh.shard_params)
        self.frozen_sharding = jax.tree.map(lambda _: self.replicated, self.frozen_state)
        step = self._train_step
        if config.mesh.deterministic_reductions:
            step = jax.shard_map(self._train_step_per_device, mesh=mesh,
                                 in_specs=(P(), P(sharding.BATCH_AXES), P()),
                                 out_specs=(P(), P()), check_vma=False)
        self.train_step = jax.jit(
            step,
            in_shardings=(self.state_sharding, self.batch_sharding, self.frozen_sharding),
            out_shardings=(self.state_sharding, self.replicated),
            donate_argnums=(0,))
        self.eval_step = jax.jit(
            self._eval_step,
            in_shardings=(self.state_sharding, self.batch_sharding, self.batch_sharding),
            out_shardings=self.replicated)

    # ---------------------------------------------------------------- compilation
    def compiled(self, name: str, jitted, *args):
        """Ahead-of-time compiled `jitted` for these arguments, cached by `name`.

        With several processes, compile times differ (one may hit the persistent cache,
        another not) and the first collective of a program waits only ~30 s for its
        peers; so every process compiles first and then meets the others at a
        coordination-service barrier that allows for slow compiles.
        """
        cache = self.__dict__.setdefault("_compiled", {})
        if name not in cache:
            cache[name] = jitted.lower(*args).compile()
            sharding.process_barrier(f"compiled_{name}")
        return cache[name]

    # ---------------------------------------------------------------- checkpoint views
    def state_to_items(self, state) -> dict[str, Any]:
        """Train state -> checkpoint items; `models` has the layout of
        `checkpoints.model_state`, so animate/evaluate read training runs directly."""
        models = {
            "generator_side": nnx.merge_state(state["gen_params"], state["gen_rest"]),
            "discriminator": nnx.merge_state(state["disc_params"], state["disc_rest"]),
        }
        return {
            "models": {k: v.to_pure_dict() for k, v in models.items()},
            "optimizer": {"gen_opt": state["gen_opt"], "disc_opt": state["disc_opt"]},
            "meta": {"step": state["step"], "rng": state["rng"]},
        }

    def abstract_items(self) -> dict[str, Any]:
        """Shape/dtype/sharding targets for restoring `state_to_items` output."""
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            jax.eval_shape(self._init_state, jnp.zeros((), jnp.int32)), self.state_sharding)
        return self.state_to_items(abstract)

    def items_to_state(self, items: dict[str, Any]) -> dict[str, Any]:
        abstract = jax.eval_shape(self._init_state, jnp.zeros((), jnp.int32))
        state = {"step": items["meta"]["step"], "rng": items["meta"]["rng"],
                 "gen_opt": items["optimizer"]["gen_opt"],
                 "disc_opt": items["optimizer"]["disc_opt"]}
        for side, key in (("gen", "generator_side"), ("disc", "discriminator")):
            merged = nnx.merge_state(abstract[f"{side}_params"], abstract[f"{side}_rest"])
            nnx.replace_by_pure_dict(merged, items["models"][key])
            state[f"{side}_params"], state[f"{side}_rest"] = nnx.split_state(
                merged, nnx.Param, ...)
        return state

    # ---------------------------------------------------------------- state
    def _init_state(self, seed: jax.Array) -> dict[str, Any]:
        # Weights from the cheap-to-compile rbg generator (see adasr._jit_init); the
        # train-time key stream stays threefry so it is identical on every backend.
        gen_key, disc_key = jax.random.split(jax.random.key(seed, impl="unsafe_rbg"))
        rng = jax.random.PRNGKey(seed)
        dtype = self.config.train.compute_dtype
        gen = adasr.build_generator(self.config.model, seed=gen_key, dtype=dtype,
                                    remat=self.config.train.remat)
        disc = adasr.build_discriminator(self.config.model, seed=disc_key, dtype=dtype)
        _, gen_params, gen_rest = nnx.split(gen, nnx.Param, ...)
        _, disc_params, disc_rest = nnx.split(disc, nnx.Param, ...)
        return {
            "step": jnp.zeros((), jnp.int32),
            "rng": rng,
            "gen_params": gen_params, "gen_rest": gen_rest,
            "disc_params": disc_params, "disc_rest": disc_rest,
            "gen_opt": self.gen_tx.init(gen_params),
            "disc_opt": self.disc_tx.init(disc_params),
        }

    def init_state(self, seed: int) -> dict[str, Any]:
        """Freshly initialised state with its shardings.

        Initialised replicated, then resharded: random bits then do not depend on how
        the mesh partitions the init program, so every mesh starts from equal weights.
        """
        init = jax.jit(self._init_state, out_shardings=self.replicated)
        return jax.device_put(init(jnp.asarray(seed, jnp.int32)), self.state_sharding)

    def shard_batch(self, local_batch: dict[str, Any]) -> Batch:
        """Per-host numpy batch -> global jax arrays split over the mesh.

        Takes the images, plus the true driving pose and head centre when they teach the
        head-pose estimator and the batch has them (evaluation batches need none), plus the ground
        truth of the motion metrics where the evaluation batch carries it (synthetic)."""
        keys = BATCH_KEYS + ((POSE_KEY,) if self.pose_from_data and POSE_KEY in local_batch
                             else ())
        if self.config.loss.head_translation and CENTRE_KEY in local_batch:
            keys += (CENTRE_KEY,)
        keys += tuple(k for k in motion_metrics.TRUTH_KEYS if k in local_batch)
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, local_batch[k])
                for k in keys}

    # ---------------------------------------------------------------- losses
    def _generator_losses(self, gen_params, gen_rest, disc_params, disc_rest, batch, frozen,
                          key, batch_shards: int):
        cfg = self.config.loss
        gen_rest, disc_params, disc_rest = _at_this_trace((gen_rest, disc_params, disc_rest))
        gen = nnx.merge(self.gen_def, gen_params, gen_rest)
        disc = nnx.merge(self.disc_def, disc_params, disc_rest)
        # As in the reference, the discriminator is in train mode here too: each of its
        # two calls below advances the spectral-norm power iteration (4 per step in all).
        disc.train()
        gen.train()
        source = batch["source"].astype(jnp.float32)
        driving = batch["driving"].astype(jnp.float32)
        out = gen(source, driving, source_lq=batch["source_lq"].astype(jnp.float32))
        prediction = out["prediction"]
        terms: dict[str, jax.Array] = {}

        perceptual = nnx.merge(self.perceptual_def, frozen["perceptual"])
        terms["perceptual"] = losses.perceptual_pyramid_loss(
            perceptual, prediction, driving, scales=tuple(cfg.perceptual_scales),
            layer_weights=tuple(cfg.perceptual))
        if cfg.reconstruction_l1:
            terms["reconstruction_l1"] = cfg.reconstruction_l1 * losses.l1_loss(
                prediction, driving)

        if cfg.generator_gan:
            fake = disc(prediction)
            real = disc(driving)
            terms["generator_gan"] = cfg.generator_gan * losses.generator_gan_loss(
                fake["prediction_maps"], self.config.train.gan_mode)
            if any(cfg.feature_matching):
                fm = jnp.zeros((), jnp.float32)
                for real_maps, fake_maps in zip(real["feature_maps"], fake["feature_maps"],
                                                strict=True):
                    real_maps = [jax.lax.stop_gradient(m) for m in real_maps]
                    fm = fm + losses.feature_matching_loss(real_maps, fake_maps,
                                                           tuple(cfg.feature_matching))
                terms["feature_matching"] = fm

        if cfg.equivariance_value:
            params = self._equivariance_transforms(key, driving.shape[0], batch_shards)
            transformed = transform_frame(params, driving)
            he_transformed = gen.he_estimator(transformed)
            kp_transformed = transform_keypoints(out["kp_canonical"], he_transformed)
            terms["equivariance_value"] = cfg.equivariance_value * \
                losses.equivariance_value_loss(out["kp_driving"], kp_transformed, params)

        if cfg.keypoint_prior:
            terms["keypoint_prior"] = cfg.keypoint_prior * losses.keypoint_prior_loss(
                out["kp_driving"], cfg.keypoint_margin, cfg.keypoint_depth)
        if self.headpose_weight:
            if self.pose_from_data:
                angles = batch[POSE_KEY]
                target = {name: angles[:, i] for i, name in enumerate(("yaw", "pitch", "roll"))}
            else:
                hopenet = nnx.merge(self.hopenet_def, frozen["hopenet"])
                target = head_pose_degrees(hopenet(hopenet_preprocess(driving)))
            terms["headpose"] = self.headpose_weight * losses.headpose_loss(
                out["he_driving"], target)
        if cfg.head_translation:
            terms["head_translation"] = cfg.head_translation * losses.head_translation_loss(
                out["he_driving"]["t"], batch[CENTRE_KEY])
        if cfg.expression:
            terms["expression"] = cfg.expression * losses.expression_loss(
                out["he_driving"]["exp"])

        total = sum(terms.values())
        new_rest = nnx.state(gen, nnx.Not(nnx.Param))
        new_disc_rest = nnx.state(disc, nnx.Not(nnx.Param))
        return total, (terms, new_rest, new_disc_rest, prediction)

    def _equivariance_transforms(self, key, local_batch: int, batch_shards: int):
        """Random warps drawn for the global batch, then this shard's rows: each example
        gets the same warp however the batch is split."""
        cfg = self.config.loss
        params = sample_transform_params(key, local_batch * batch_shards, cfg.sigma_affine,
                                         cfg.sigma_tps, cfg.points_tps)
        if batch_shards == 1:
            return params
        start = jax.lax.axis_index(sharding.BATCH_AXES) * local_batch
        rows = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=start,
                                 slice_size=local_batch)
        return params._replace(theta=rows(params.theta),
                               control_params=rows(params.control_params))

    def _discriminator_loss(self, disc_params, disc_rest, driving, prediction):
        disc_rest = _at_this_trace(disc_rest)
        disc = nnx.merge(self.disc_def, disc_params, disc_rest)
        disc.train()
        # The reference's order: the fake batch first, then the real one (the power
        # iteration runs once per call, so the order changes the normalised weights).
        fake = disc(jax.lax.stop_gradient(prediction))
        real = disc(driving)
        loss = self.config.loss.discriminator_gan * losses.discriminator_gan_loss(
            real["prediction_maps"], fake["prediction_maps"], self.config.train.gan_mode)
        return loss, nnx.state(disc, nnx.Not(nnx.Param))

    # ---------------------------------------------------------------- steps
    def _mean_over_devices(self, tree):
        """Inside `shard_map`: the device mean of a per-device pytree, in device order."""
        num_devices = self.mesh.devices.size
        return jax.tree.map(lambda x: x / num_devices, sharding.ordered_sum(tree))

    def _train_step_per_device(self, state, batch, frozen):
        """`_train_step` on this device's rows, with every cross-device sum ordered."""
        with blocks.batch_statistics_mean(self._mean_over_devices):
            return self._train_step(state, batch, frozen, batch_shards=self.mesh.devices.size)

    def _train_step(self, state, batch, frozen, batch_shards: int = 1):
        """One update. Under `shard_map` (`batch_shards` > 1) the batch is this device's
        rows, and gradients and losses are averaged over the devices."""
        per_device = batch_shards > 1
        rng, key = jax.random.split(state["rng"])
        grad_fn = jax.value_and_grad(
            functools.partial(self._generator_losses, batch_shards=batch_shards), has_aux=True)
        (gen_loss, (terms, gen_rest, disc_rest, prediction)), gen_grads = grad_fn(
            state["gen_params"], state["gen_rest"], state["disc_params"], state["disc_rest"],
            batch, frozen, key)
        if per_device:
            gen_loss, terms, gen_grads = self._mean_over_devices((gen_loss, terms, gen_grads))
        updates, gen_opt = self.gen_tx.update(gen_grads, state["gen_opt"], state["gen_params"])
        gen_params = optax.apply_updates(state["gen_params"], updates)

        metrics = dict(terms)
        metrics["generator_total"] = gen_loss
        metrics["generator_grad_norm"] = optax.global_norm(gen_grads)
        disc_params, disc_opt = state["disc_params"], state["disc_opt"]
        if self.config.loss.generator_gan:
            # From the spectral vectors the generator pass advanced.
            (disc_loss, disc_rest), disc_grads = jax.value_and_grad(
                self._discriminator_loss, has_aux=True)(
                    state["disc_params"], disc_rest,
                    batch["driving"].astype(jnp.float32), prediction)
            if per_device:
                disc_loss, disc_grads = self._mean_over_devices((disc_loss, disc_grads))
            updates, disc_opt = self.disc_tx.update(disc_grads, disc_opt, disc_params)
            disc_params = optax.apply_updates(disc_params, updates)
            metrics["discriminator_gan"] = disc_loss
        new_state = {
            "step": state["step"] + 1, "rng": rng,
            "gen_params": gen_params, "gen_rest": gen_rest,
            "disc_params": disc_params, "disc_rest": disc_rest,
            "gen_opt": gen_opt, "disc_opt": disc_opt,
        }
        return new_state, jax.tree.map(lambda x: x.astype(jnp.float32), metrics)

    def _eval_step(self, state, batch, mask):
        """Eval mode (running statistics): masked sums over the global batch of the
        per-example L1, PSNR and SSIM of the prediction, of the copy-the-source floor
        and of the no-motion rendering (the source driven by itself: a model that
        ignores the driver scores the same), plus the count. Replicated, so every host
        can read them. With ground truth in the batch (synthetic data) also the motion
        metrics (`asrth_jax.motion_metrics`): landmark transfer error (copy-source's is
        the identity-motion error) and moving-region L1 of the three."""
        import dm_pix

        gen = nnx.merge(self.gen_def, state["gen_params"], state["gen_rest"])
        gen.eval()
        driving = batch["driving"].astype(jnp.float32)
        source = batch["source"].astype(jnp.float32)
        # source_lq is the clean source unless config.eval.degraded_source (see train.py).
        src = gen.source_state(source, batch["source_lq"].astype(jnp.float32))
        prediction = gen.drive(src, driving)
        still = gen.generator.decode(src["feature_3d"], src["kp"], src["kp"])
        result = {"count": mask.sum()}
        images = (("model", prediction["prediction"]), ("copy_source", source),
                  ("no_motion", still["prediction"]))
        if motion_metrics.TRUTH_KEYS[0] in batch:
            result.update(self._motion_sums(batch, images, (prediction, still), mask))
        for name, image in images:
            mse = jnp.square(image - driving).mean(axis=(1, 2, 3))
            per_example = {
                "l1": jnp.abs(image - driving).mean(axis=(1, 2, 3)),
                # Frame 0 of each video is the source itself: cap PSNR at 100 dB.
                "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10)),
                "ssim": dm_pix.ssim(image, driving),
            }
            for metric, values in per_example.items():
                result[f"{name}_{metric}"] = (values * mask).sum()
        return result

    @staticmethod
    def _motion_sums(batch, images, outputs, mask) -> dict[str, jax.Array]:
        """Masked sums of the motion metrics of the model, copy-source and no-motion."""
        src_lm, drv_lm, src_mask, drv_mask = (batch[k] for k in motion_metrics.TRUTH_KEYS)
        driving = batch["driving"].astype(jnp.float32)
        size = driving.shape[1:3]
        model, still = (motion_metrics.landmark_transfer_error(out["deformation"], src_lm,
                                                               drv_lm, size)
                        for out in outputs)
        errors = {"model": model, "no_motion": still,
                  "copy_source": motion_metrics.identity_motion_error(src_lm, drv_lm)}
        result = {}
        for name, image in images:
            moving = motion_metrics.moving_l1(image, driving, src_mask, drv_mask)
            result[f"{name}_landmark_error"] = (errors[name] * mask).sum()
            result[f"{name}_moving_l1"] = (moving * mask).sum()
        return result

    @functools.cached_property
    def visual_step(self):
        """Eval-mode outputs for image grids (prediction, occlusion, keypoints, and the
        deformation for the landmark-transfer column)."""
        def visuals(state, batch):
            gen = nnx.merge(self.gen_def, state["gen_params"], state["gen_rest"])
            gen.eval()
            out = gen(batch["source"], batch["driving"], source_lq=batch["source_lq"])
            return {k: out[k] for k in ("prediction", "occlusion_map", "kp_source",
                                        "kp_driving", "deformation")}
        # Replicated output: every host may fetch it (only the chief writes images).
        return jax.jit(visuals, out_shardings=self.replicated)

    # ---------------------------------------------------------------- views
    def models(self, state) -> tuple[nnx.Module, nnx.Module]:
        """Live modules (generator side, discriminator) holding the state's values."""
        gen = nnx.merge(self.gen_def, state["gen_params"], state["gen_rest"])
        disc = nnx.merge(self.disc_def, state["disc_params"], state["disc_rest"])
        return gen, disc
