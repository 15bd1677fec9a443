"""Config building blocks shared by `configs/*.py` (config as code, big_vision style).

Every knob of the project lives here with its default; the files in `configs/` only
override. Configs are returned locked, so a misspelt key is an error, not a new knob.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import math
import os
import re
import traceback

import ml_collections

from asrth_jax import errors
from data_pipelines.config import KINDS, default_data_config

# Exactly the released AdaSR model (`config/mix-resolution.yml` of the reference).
RELEASED_MODEL = {
    "common": {"num_kp": 15, "image_channel": 3, "feature_channel": 32},
    "kp_detector": {
        "temperature": 0.1, "block_expansion": 32, "max_features": 1024,
        "scale_factor": 0.25, "num_blocks": 5, "reshape_channel": 16384,
        "reshape_depth": 16,
    },
    "he_estimator": {
        "block_expansion": 64, "num_bins": 66,
        "stage_features": (256, 512, 1024, 2048), "stage_blocks": (3, 3, 5, 2),
        "norm": "batch",  # blocks.NORM_LAYERS
    },
    "generator": {
        "block_expansion": 64, "max_features": 512, "num_down_blocks": 2,
        "reshape_channel": 32, "reshape_depth": 16, "num_resblocks": 6,
        "estimate_occlusion_map": True, "decoder_out_features": 64, "decoder_hidden": 128,
        "decoder_middle_blocks": 6,
        "dense_motion": {
            "block_expansion": 32, "max_features": 1024, "num_blocks": 5,
            "reshape_depth": 16, "compress": 4,
        },
    },
    "discriminator": {
        "scales": (1,), "block_expansion": 32, "max_features": 512, "num_blocks": 4,
        "sn": True,
    },
}


def model_config(overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The released model, with nested `overrides` applied."""
    cfg = ml_collections.ConfigDict(RELEASED_MODEL)
    if overrides:
        _merge(cfg, overrides)
    return cfg


def _merge(cfg: ml_collections.ConfigDict, overrides: dict) -> None:
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"unknown config key {key!r}; known: {sorted(cfg.keys())}")
        if isinstance(value, dict):
            _merge(cfg[key], value)
        else:
            cfg[key] = value


def base_config() -> ml_collections.ConfigDict:
    """All knobs with the reference's training recipe (its teachers, optimiser and
    losses). The dataset-sized numbers (epochs, repeats, batch) live in the configs;
    every config states its training length (`train.num_epochs` or `train.num_steps`)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.image_size = 512
    c.model = model_config()
    c.data = default_data_config()

    c.train = ml_collections.ConfigDict()
    c.train.global_batch_size = 4
    # Exactly one of the two: epochs of the training set (the reference counts in
    # epochs; the step count follows when the dataset is opened, see
    # `asrth_jax/schedule.py`) or a fixed number of steps (demo, tests).
    c.train.num_epochs = 0
    c.train.num_steps = 0
    c.train.compute_dtype = "float32"  # or "bfloat16"; parameters stay float32
    c.train.remat = False
    c.train.gan_mode = "hinge"  # or "ls"
    c.train.grad_clip_norm = 0.0  # 0 disables clipping
    # The reference trains from PyTorch's default initialisation ("pytorch", drawn on the
    # host: `asrth_jax/models/torch_init.py`); "flax" is Flax's (the demo's choice).
    c.train.init = "pytorch"
    # PyTorch's BatchNorm keeps the unbiased batch variance in its running variance
    # ("unbiased"); Flax's keeps the biased one ("biased").
    c.train.batchnorm_running_var = "unbiased"
    # The head-pose estimator on source, driving and the equivariance frames as one call
    # (True: XLA compiles it once, each batch keeping its own BatchNorm statistics) or one
    # call each (False). Equal in value; they round differently.
    c.train.batched_head_pose = True

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    # x`decay_factor` at each milestone, in epochs (the reference's epoch_milestones)
    # or in steps; at most one of the two.
    c.optim.decay_epochs = ()
    c.optim.decay_milestones = ()  # steps
    c.optim.decay_factor = 0.1
    # ((regex, multiplier), ...) over parameter paths such as
    # "generator/dense_motion_network/mask/kernel": the first match scales that
    # parameter's learning rate (big_vision's lr_mults); unmatched ones keep 1.
    c.optim.lr_mults = ()

    c.loss = ml_collections.ConfigDict()
    c.loss.perceptual = (10.0, 10.0, 10.0, 10.0, 10.0)
    c.loss.perceptual_scales = (1.0, 0.5, 0.25, 0.125)
    # The reference's ImageNet VGG19 (relu1_1..relu5_1); "lpips_vgg16" is a substitute
    # with bundled weights. Training stops at start if the VGG19 file is missing.
    c.loss.perceptual_network = "vgg19"
    c.loss.vgg19_weights = ""  # python -m asrth_jax.convert --vgg19 FILE --out DIR
    c.loss.generator_gan = 1.0
    c.loss.discriminator_gan = 1.0
    c.loss.feature_matching = (10.0, 10.0, 10.0, 10.0)
    c.loss.equivariance_value = 10.0
    c.loss.keypoint_prior = 10.0
    c.loss.keypoint_margin = 0.1
    c.loss.keypoint_depth = 0.33
    c.loss.headpose = 20.0
    # python -m asrth_jax.convert --hopenet FILE --out DIR; training with the "hopenet"
    # teacher and a head-pose weight stops at start without it.
    c.loss.hopenet_weights = ""
    # Who teaches the head-pose estimator: "hopenet" (the reference: a pretrained HopeNet
    # on the driving frame) or "data" (the dataset's true pose, e.g. synthetic heads).
    c.loss.headpose_teacher = "hopenet"
    # Not in the reference: L1 between the estimator's translation (x, y) and the true
    # head centre, in keypoint coordinates. Only data that knows it (synthetic heads)
    # can teach it; the reference leaves translation to the reconstruction losses.
    c.loss.head_translation = 0.0
    # Not in the reference (its keypoints are unsupervised): L1 between the driving
    # keypoints' x, y and the true landmarks (keypoint k <- landmark k), in keypoint
    # coordinates. Only synthetic heads know their landmarks; a teacher that puts the
    # keypoints on the face from the first steps, for CPU-length runs.
    c.loss.landmark_keypoints = 0.0
    # Not in the reference: the landmark transfer error as a loss, L1 in grid
    # coordinates between where the deformation sends each true driving landmark and
    # the true source landmark. Only synthetic heads know their landmarks; it teaches
    # the dense-motion mask which keypoint moves which part of the face.
    c.loss.landmark_motion = 0.0
    # Not in the reference: L1 between the deformation and no motion on the static
    # background (away from both frames' head masks, which only synthetic heads know),
    # so the keypoints' motions do not drag the background along.
    c.loss.background_motion = 0.0
    c.loss.expression = 5.0
    # The reference adds an L1 reconstruction term whose weight its released config
    # does not give; 0 keeps the released recipe.
    c.loss.reconstruction_l1 = 0.0
    c.loss.sigma_affine = 0.05
    c.loss.sigma_tps = 0.005
    c.loss.points_tps = 5

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by the other axis
    c.mesh.fsdp = 1
    c.mesh.shard_params = False  # shard params/optimizer state over `fsdp`
    # Reproducibility across process layouts: the step runs per device and adds every
    # cross-device sum in device order, so 2 processes x 2 devices give the bits of
    # 1 process x 4. Costs all-gathers (N x gradient memory): a debugging switch.
    c.mesh.deterministic_reductions = False

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 5000
    c.eval.num_videos = 16
    c.eval.max_frames = 32
    # The FOMM reconstruction protocol encodes the clean frame 0, as inference does with
    # a sharp portrait (and as `python -m asrth_jax.evaluate` does). True scores the
    # degraded source instead (`python -m asrth_jax.evaluate --degraded-source`).
    c.eval.degraded_source = False

    c.log = ml_collections.ConfigDict()
    c.log.scalars_every_steps = 50
    c.log.images_every_steps = 1000
    c.log.profile_steps = 5

    c.cpu_collectives = ""  # "gloo" for multi-process CPU runs
    return c


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Ties derived fields together and locks the config against unknown keys."""
    config.data.image_size = config.image_size
    config.lock()
    return config


ConfigError = errors.ConfigError  # re-exported: config problems are raised from here


def check_config_file(path: str) -> None:
    """A config path must be an existing `.py` file defining `get_config` (read, not run)."""
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist (try configs/vox.py)")
    if not os.path.isfile(path) or not path.endswith(".py"):
        raise ConfigError(f"config {path} is not a .py file; pass a config such as "
                          "configs/vox.py")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"config file {path} is not valid Python: {exc}") from None
    defined = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
    if "get_config" not in defined:
        raise ConfigError(f"config file {path} defines no get_config(); see configs/vox.py")


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Runs a config file's `get_config()`; a missing or broken file, or a misspelt key,
    is a one-line ConfigError."""
    check_config_file(path)
    spec = importlib.util.spec_from_file_location("_asrth_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        config = module.get_config()
    except (AttributeError, KeyError) as exc:  # a misspelt key in a locked ConfigDict
        message = " ".join(str(exc).replace("\\n", " ").split())
        raise ConfigError(f"config file {path}: unknown key {message}") from None
    except Exception as exc:  # noqa: BLE001 - a wrongly typed value, or any error in it
        raise ConfigError(f"config file {path}{_line_in(path, exc)}: {type(exc).__name__}: "
                          + " ".join(str(exc).replace("\\n", " ").split())) from None
    try:
        check_keys(config)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return config


def _line_in(path: str, exc: BaseException) -> str:
    """' line N' of the config file where `exc` was raised ('' if not in it)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f" line {frames[-1].lineno}" if frames else ""


def _dotted_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    names = []
    for key, value in config.items():
        names.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            names += _dotted_keys(value, f"{prefix}{key}.")
    return names


def nearest_key(name: str, defaults: ml_collections.ConfigDict) -> str | None:
    """The known key a misspelt dotted `name` most likely meant: the same leaf in
    another section (`train.lr` -> `optim.lr`), an abbreviation (`optim.learning_rate`
    -> `optim.lr`), else the most similar spelling among its section's keys."""
    section, _, leaf = name.rpartition(".")
    known = _dotted_keys(defaults)
    elsewhere = [k for k in known if k.rpartition(".")[2] == leaf]
    if elsewhere:
        return elsewhere[0]
    prefix = f"{section}." if section else ""
    siblings = [k[len(prefix):] for k in known if k.startswith(prefix)
                and "." not in k[len(prefix):]]
    initials = "".join(word[0] for word in leaf.split("_") if word)
    if initials in siblings:
        return prefix + initials
    best = max(siblings, key=lambda k: difflib.SequenceMatcher(None, leaf, k).ratio(),
               default=None)
    return None if best is None else prefix + best


def check_keys(config: ml_collections.ConfigDict) -> None:
    """ConfigError (one line) unless `config` is a ConfigDict whose every key is one of
    `base_config()`'s: a key set inside a config file before it is locked (a misspelt
    `c.optim.learning_rate = 5.0`) would otherwise be a new knob that nothing reads."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() returned a {type(config).__name__}, not a "
                          "ConfigDict; build it from config_lib.base_config() and return "
                          "config_lib.finalize(c), as configs/vox.py does")
    defaults = base_config()
    known = set(_dotted_keys(defaults))
    unknown = [k for k in _dotted_keys(config) if k not in known
               and k.rpartition(".")[0] in known | {""}]  # not the keys under an unknown one
    if unknown:
        hint = nearest_key(unknown[0], defaults)
        more = f" (and {len(unknown) - 1} more unknown keys)" if len(unknown) > 1 else ""
        raise ConfigError(f"config.{unknown[0]} is not a config key"
                          + (f"; did you mean config.{hint}?" if hint else "") + more
                          + " (the keys are those of asrth_jax/config_lib.py base_config())")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _paired_values(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict,
                   prefix: str = "config."):
    """(dotted name, value, default) of each knob of `defaults` that `config` has; a
    section whose value is not a section is one such knob."""
    for key, default in defaults.items():
        if key not in config:
            continue
        value, name = config[key], f"{prefix}{key}"
        if isinstance(default, ml_collections.ConfigDict) and isinstance(
                value, ml_collections.ConfigDict):
            yield from _paired_values(value, default, name + ".")
        else:
            yield name, value, default


def _tuple_problems(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict):
    """Tuple-valued knobs must hold what their defaults hold (a command-line override
    such as `--config.optim.decay_milestones=abc` arrives as a string)."""
    for name, value, default in _paired_values(config, defaults):
        if isinstance(default, tuple) and default:
            numeric = all(_is_number(d) for d in default)
            element = type(default[0])
            fits = [_is_number(v) if numeric else isinstance(v, element)
                    for v in (value if isinstance(value, (tuple, list)) else [])]
            if not isinstance(value, (tuple, list)) or not all(fits):
                what = "numbers" if numeric else f"{type(default[0]).__name__}s"
                yield f"{name} must be a tuple of {what} such as {default}, got {value!r}"


def _lr_mults_problems(rules) -> list[str]:
    example = "(('dense_motion_network/mask', 0.2),)"
    if not isinstance(rules, (tuple, list)) or not all(
            isinstance(r, (tuple, list)) and len(r) == 2 and isinstance(r[0], str)
            and _is_number(r[1]) and 0 <= r[1] < math.inf for r in rules):
        return [f"config.optim.lr_mults must be ((regex, multiplier >= 0), ...) such as "
                f"{example}, got {rules!r}"]
    for pattern, _ in rules:
        try:
            re.compile(pattern)
        except re.error as exc:
            return [f"config.optim.lr_mults pattern {pattern!r} is not a regular expression "
                    f"({exc})"]
    return []


def _leaf_problems(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict):
    """Values of another kind than their defaults (a section replaced by a number, a
    string for a number, ...) and numbers that are not finite (nan, inf)."""
    for name, value, default in _paired_values(config, defaults):
        if isinstance(default, ml_collections.ConfigDict):
            yield f"{name} must be a section (ConfigDict), got {value!r}"
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                yield f"{name} must be True or False, got {value!r}"
        elif _is_number(default):
            if not _is_number(value):
                yield f"{name} must be a number such as {default!r}, got {value!r}"
            elif not math.isfinite(value):
                yield f"{name} must be a finite number, got {value!r}"
        elif isinstance(default, str) and not isinstance(value, str):
            yield f"{name} must be a string such as {default!r}, got {value!r}"
        elif isinstance(default, tuple) and isinstance(value, (tuple, list)):
            bad = [v for v in value if _is_number(v) and not math.isfinite(v)]
            if bad:
                yield f"{name} must hold finite numbers, got {value!r}"


# Numbers under config.loss that may be negative (a target depth, not a weight).
_SIGNED_LOSS_KEYS = ("keypoint_depth",)


def _range_problems(config: ml_collections.ConfigDict) -> list[str]:
    """Signs and ranges that the types do not say: a negative loss weight would train
    the model away from its target; b1/b2 outside [0, 1) diverge."""
    problems = []
    for key, value in config.loss.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        if key in _SIGNED_LOSS_KEYS or not all(_is_number(v) for v in values):
            continue
        if any(v < 0 for v in values):
            problems.append(f"config.loss.{key} must be >= 0 (0 turns a term off), got "
                            f"{value!r}")
    if any(_is_number(v) and not 0 < v <= 1 for v in config.loss.perceptual_scales):
        problems.append(f"config.loss.perceptual_scales must be in (0, 1], got "
                        f"{config.loss.perceptual_scales!r}")
    problems += _perceptual_size_problems(config)
    for name in ("b1", "b2"):
        value = config.optim[name]
        if _is_number(value) and not 0 <= value < 1:
            problems.append(f"config.optim.{name} must be in [0, 1), got {value!r}")
    if _is_number(config.train.grad_clip_norm) and config.train.grad_clip_norm < 0:
        problems.append(f"config.train.grad_clip_norm must be >= 0 (0: no clipping), got "
                        f"{config.train.grad_clip_norm!r}")
    return problems


def _perceptual_size_problems(config: ml_collections.ConfigDict) -> list[str]:
    """The VGG trunk max-pools before each tapped layer after the first (layer k sees
    1/2**k of its input): a pyramid level smaller than that gives the layer no pixels,
    and its mean is NaN from the first step (64 px at scale 0.125 is 8 px; relu5 needs 16)."""
    loss = config.loss
    weights, scales = tuple(loss.perceptual), tuple(loss.perceptual_scales)
    numbers = all(_is_number(v) for v in weights + scales) and _is_number(config.image_size)
    if not (numbers and scales and any(weights)):
        return []
    deepest = max(k for k, weight in enumerate(weights) if weight)
    smallest = min(int(config.image_size * scale) for scale in scales)
    if smallest >= 2 ** deepest:
        return []
    fitting = tuple(s for s in scales if int(config.image_size * s) >= 2 ** deepest)
    return [f"config.loss.perceptual_scales {scales!r} at image_size {config.image_size} "
            f"give a {smallest} px level, smaller than the {2 ** deepest} px the VGG layer "
            f"{deepest + 1} needs (it would be empty and the loss NaN); use {fitting!r} or a "
            f"zero weight for that layer in config.loss.perceptual"]


def _check_values(config: ml_collections.ConfigDict) -> None:
    """The keys and each value's kind and range; ConfigError names the first bad value
    and what it should be."""
    check_keys(config)
    defaults = base_config()
    problems = list(_leaf_problems(config, defaults))
    if problems:  # the checks below assume the right kinds of values
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    problems = list(_tuple_problems(config, defaults))
    if config.data.kind not in KINDS:
        problems.append(f"config.data.kind must be one of {KINDS}, got {config.data.kind!r}")
    problems += _range_problems(config)
    # The length may be given in steps or in epochs (schedule.check_training_length says
    # which combinations are allowed), so each alone may be 0.
    at_least = {"image_size": 1, "train.global_batch_size": 1, "train.num_steps": 0,
                "train.num_epochs": 0,
                "checkpoint.every_steps": 1, "checkpoint.keep": 1,
                "log.scalars_every_steps": 1, "log.images_every_steps": 1,
                "log.profile_steps": 0, "eval.every_steps": 0}
    for name, low in at_least.items():
        section, _, key = name.rpartition(".")
        value = (config[section] if section else config)[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"config.{name} must be an integer >= {low}, got {value!r}")
    for name in ("lr", "decay_factor"):
        if not _is_number(config.optim[name]) or not 0 < config.optim[name] < math.inf:
            problems.append(f"config.optim.{name} must be a positive number, got "
                            f"{config.optim[name]!r}")
    # Their defaults are empty, so _tuple_problems cannot tell what they hold.
    for name, unit in (("decay_milestones", "step"), ("decay_epochs", "epoch")):
        milestones = config.optim[name]
        if not isinstance(milestones, (tuple, list)) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in milestones):
            problems.append(f"config.optim.{name} must be a tuple of positive {unit} numbers "
                            f"such as (16,), got {milestones!r}")
    problems += _lr_mults_problems(config.optim.lr_mults)
    for name, allowed in (("compute_dtype", ("float32", "bfloat16")),
                          ("gan_mode", ("hinge", "ls"))):
        if config.train[name] not in allowed:
            problems.append(f"config.train.{name} must be one of {allowed}, got "
                            f"{config.train[name]!r}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def validate(config: ml_collections.ConfigDict) -> None:
    """The one validation entry point of a training config, before anything is built:
    keys and values, then each part against the check that lives beside the code it
    guards (generator shape, loss teachers and their files, training length, reductions,
    degradation). Raises only ConfigError, one line naming the first problem and the fix."""
    # The checks beside the training code pull in JAX, Flax and OpenCV: loaded only when
    # a training config is checked (animate and the app load configs too).
    from asrth_jax import sharding
    from asrth_jax.models.generator import check_num_down_blocks
    from asrth_jax.schedule import check_training_length
    from asrth_jax.teachers import check_teachers
    from data_pipelines.degradation import validate_config as check_degradation

    _check_values(config)
    check_num_down_blocks(config.model.generator.num_down_blocks)
    check_teachers(config.loss, config.data.kind)
    check_training_length(config)
    sharding.check_deterministic_reductions(config.mesh)
    check_degradation(config.data.degradation)
