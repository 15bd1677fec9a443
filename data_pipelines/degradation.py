"""AdaSR source-frame degradations as Grain random transforms (numpy + OpenCV).

Only the source frame is degraded; the driving frame (the training target) stays
clean, which is what teaches the generator to restore detail from a low-quality
source (AdaSR). Three presets share one ConfigDict layout so a locked config can
switch presets by overriding a single string:

* ``none``        -- identity (source_lq is a copy of source).
* ``downsample``  -- the paper's "random downsampling": shrink by a random scale
                     with a random area/bilinear/bicubic filter, then resize back.
* ``realesrgan2`` -- AdaSR's second-order chain (reference `modules/model.py`):
                     stage 1 blur -> resize -> noise -> JPEG; stage 2 blur (p 0.8) ->
                     resize to an absolute size -> noise; then [resize back + sinc] and
                     JPEG in random order; round to 8 bits. The JPEG is basicsr's
                     DiffJPEG (`data_pipelines/jpeg.py`).

``realesrgan2`` first draws a plan (a list of `Op`s holding every sampled number) and
then runs it, so tests can check the sampled statistics from plans alone and
`degrade(..., trace=[])` records what was executed.

The reference runs the chain on a whole GPU batch, so some of its choices are made once
per batch (`BatchChoices`): each stage's blur on/off, resize direction, scale and mode,
and Gaussian-or-Poisson noise; the final order and the final resize mode; and basicsr's
gray Gaussian noise is one (h, w) field for the batch (each pair scales it by its own
sigma). Kernels, noise strengths, gray-or-colour, JPEG qualities and the final sinc are
per pair, as there. ``realesrgan2.draw_per = "batch"`` (default) shares the choices
across a training batch, ``"pair"`` draws them per pair. All randomness is from
generators the caller seeds (the pipeline: from the seed and the global position or
batch index), so a record always gets the same degradation for a given seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import grain
import ml_collections
import numpy as np

from data_pipelines import kernels
from data_pipelines.degradation_config import (
    DRAW_PER,
    INTERPOLATION_NAMES,
    PRESETS,
    RESIZE_RELATIVE_TO,
    default_degradation_config,
)
from data_pipelines.errors import ConfigError
from data_pipelines.jpeg import diff_jpeg

__all__ = ["DRAW_PER", "PRESETS", "BatchChoices", "DegradationConfigError", "DegradeSource",
           "Op", "StageChoices", "default_degradation_config", "degrade",
           "draw_batch_choices", "plan_realesrgan2", "validate_config"]


class DegradationConfigError(ConfigError):
    """A degradation config value is unusable (named in the message with the fix)."""


# OpenCV's half-pixel bilinear/bicubic (a = -0.75, no antialiasing) are torch's
# interpolate(align_corners=False); torch's "area" is adaptive average pooling (below).
_CV2_INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclasses.dataclass(frozen=True)
class Op:
    """One step of a drawn degradation: ``name`` in blur/resize/noise/clip/jpeg."""

    name: str
    stage: str
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) * (1.0 / 255.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    # Round half to even, as torch.round does in the reference.
    return np.clip(np.rint(image * np.float32(255.0)), 0, 255).astype(np.uint8)


def _adaptive_bins(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive pooling bins: output i covers [floor(i n / size),
    ceil((i + 1) n / size)), integer bins that may overlap."""
    i = np.arange(size)
    return (i * n) // size, -(-((i + 1) * n) // size)


def _pool_rows(x: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling of axis 0 to ``size``: a few weighted whole-row gathers
    (bins here are 1-3 rows long), which numpy does as contiguous copies."""
    n = x.shape[0]
    start, end = _adaptive_bins(n, size)
    inv = (1.0 / (end - start)).astype(np.float32)
    shape = (size,) + (1,) * (x.ndim - 1)
    out = x[start] * inv.reshape(shape)
    for k in range(1, int((end - start).max())):
        w = np.where(start + k < end, inv, np.float32(0.0))
        out += x[np.minimum(start + k, n - 1)] * w.reshape(shape)
    return out


def _area_resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """torch's interpolate(mode="area") (adaptive average pooling), rows then columns."""
    rows = _pool_rows(image, hw[0])
    return cv2.transpose(_pool_rows(cv2.transpose(rows), hw[1]))  # cv2: fast 3-ch transpose


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> list[np.ndarray]:
    """torch's bicubic convolution weights for taps at offsets -1, 0, 1, 2 from floor(src)."""
    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _interp_rows(x: np.ndarray, size: int, scale_factor: float, mode: str) -> np.ndarray:
    """torch's upsample_{bilinear,bicubic}2d along axis 0 given ``scale_factor``: source
    coordinate (i + 0.5) / scale_factor - 0.5, edge samples repeated."""
    n = x.shape[0]
    src = (np.arange(size) + 0.5) / scale_factor - 0.5
    if mode == "bilinear":
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.intp), n - 1)
        lam = src - i0
        taps = [(i0, 1.0 - lam), (np.minimum(i0 + 1, n - 1), lam)]
    else:
        base = np.floor(src).astype(np.intp)
        weights = _cubic_weights(src - base)
        taps = [(np.clip(base - 1 + k, 0, n - 1), weights[k]) for k in range(4)]
    shape = (size,) + (1,) * (x.ndim - 1)
    out = np.zeros((size,) + x.shape[1:], dtype=np.float32)
    for idx, w in taps:
        out += x[idx] * w.astype(np.float32).reshape(shape)
    return out


def resize(
    image: np.ndarray, hw: tuple[int, int], mode: str, scale_factor: float | None = None
) -> np.ndarray:
    """Resize an HxWxC float image to ``hw`` with torch's interpolate semantics for
    ``mode`` in area/bilinear/bicubic (no clipping: bicubic may overshoot, as in torch).

    ``scale_factor``: torch's ``interpolate(scale_factor=...)``, where bilinear/bicubic map
    coordinates by 1/scale_factor rather than by the size ratio (``hw`` must then be
    floor(size x scale_factor)); None means ``interpolate(size=hw)``.
    """
    h, w = hw
    if mode == "area" or scale_factor is None or scale_factor == 1.0:
        if image.shape[:2] == (h, w):
            return image
        if mode == "area":  # adaptive pooling ignores scale_factor in torch too
            return _area_resize(image, hw)
        return cv2.resize(image, (w, h), interpolation=_CV2_INTERPOLATIONS[mode])
    rows = _interp_rows(image, h, scale_factor, mode)
    return cv2.transpose(_interp_rows(cv2.transpose(rows), w, scale_factor, mode))


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate with reflect padding (basicsr's filter2D; zero-padding the kernel to
    21 taps as the reference does changes nothing)."""
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def add_gaussian_noise(
    image: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool,
    gray_field_seed: Sequence[int] | None = None,
) -> np.ndarray:
    """Additive white noise (sigma in 8-bit levels); ``gray`` shares one field across
    channels, drawn from ``gray_field_seed`` where given (basicsr's one (h, w) gray field
    of a batch: the same seed gives every pair of the batch the same field), else from
    ``rng``. Clipped to [0, 1]."""
    h, w, c = image.shape
    if gray:
        source = rng if gray_field_seed is None else np.random.default_rng(
            np.random.SeedSequence(list(gray_field_seed)))
        field = source.standard_normal((h, w, 1), dtype=np.float32)
    else:
        field = rng.standard_normal((h, w, c), dtype=np.float32)
    return np.clip(image + field * np.float32(sigma / 255.0), 0.0, 1.0)


def add_poisson_noise(
    image: np.ndarray, rng: np.random.Generator, scale: float, gray: bool
) -> np.ndarray:
    """basicsr's shot noise: Poisson counts at 2^ceil(log2(#distinct 8-bit levels)) levels
    of the (gray, if ``gray``) image, the difference scaled and added. Clipped to [0, 1]."""
    base = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None] if gray else image
    q = _to_uint8(base)
    levels = int(np.count_nonzero(np.bincount(q.ravel(), minlength=256)))
    vals = 2 ** math.ceil(math.log2(levels))
    qf = q.astype(np.float32) * (1.0 / 255.0)
    noisy = rng.poisson(qf * np.float32(vals)).astype(np.float32) / np.float32(vals)
    return np.clip(image + (noisy - qf) * np.float32(scale), 0.0, 1.0)


def jpeg(image: np.ndarray, quality: float) -> np.ndarray:
    """The chain's JPEG: basicsr's DiffJPEG at a continuous quality (float out)."""
    return diff_jpeg(image, quality)


# --------------------------------------------------------------------- plan


def _choice(rng: np.random.Generator, names: Sequence[str]) -> str:
    return str(names[rng.integers(len(names))])


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


@dataclasses.dataclass(frozen=True)
class StageChoices:
    """One stage's choices that the reference makes once per batch."""

    blur: bool
    direction: str  # up / down / keep
    scale: float
    mode: str  # resize interpolation
    gaussian: bool  # Gaussian noise, else Poisson


@dataclasses.dataclass(frozen=True)
class BatchChoices:
    """The ``realesrgan2`` choices the reference makes once per batch (module docstring)."""

    stage1: StageChoices
    stage2: StageChoices
    resize_first: bool  # final order: [resize back + sinc] then JPEG, else JPEG first
    final_mode: str
    gray_noise_seed: int  # with the stage number, seeds that stage's gray Gaussian field


def _resize_scale(rng: np.random.Generator, st: Any) -> tuple[str, float]:
    direction = ("up", "down", "keep")[kernels.weighted_index(rng, st.resize_probs)]
    lo, hi = st.resize_range
    if direction == "up":
        return direction, float(rng.uniform(1.0, hi))
    if direction == "down":
        return direction, float(rng.uniform(lo, 1.0))
    return direction, 1.0


def _stage_choices(rng: np.random.Generator, st: Any) -> StageChoices:
    blur_on = bool(rng.uniform() < st.blur_prob)
    direction, scale = _resize_scale(rng, st)
    mode = _choice(rng, st.interpolations)
    return StageChoices(blur_on, direction, scale, mode,
                        bool(rng.uniform() < st.gaussian_noise_prob))


def draw_batch_choices(rng: np.random.Generator, cfg: Any) -> BatchChoices:
    """Draw the once-per-batch choices of a ``realesrgan2`` config (``config.realesrgan2``)."""
    stage1 = _stage_choices(rng, cfg.stage1)
    stage2 = _stage_choices(rng, cfg.stage2)
    resize_first = bool(rng.uniform() < cfg.final.resize_first_prob)
    return BatchChoices(stage1, stage2, resize_first, _choice(rng, cfg.final.interpolations),
                        int(rng.integers(2**63)))


def _noise_op(rng: np.random.Generator, st: Any, stage: str, gaussian: bool,
              gray_field_seed: tuple[int, int]) -> Op:
    if gaussian:
        args = {"kind": "gaussian", "sigma": _uniform(rng, st.noise_sigma_range)}
    else:
        args = {"kind": "poisson", "scale": _uniform(rng, st.poisson_scale_range)}
    args["gray"] = bool(rng.uniform() < st.gray_noise_prob)
    if gaussian and args["gray"]:
        args["gray_field_seed"] = gray_field_seed
    return Op("noise", stage, args)


def _stage_ops(
    rng: np.random.Generator, st: Any, stage: str, hw: tuple[int, int],
    orig_hw: tuple[int, int], chosen: StageChoices, gray_field_seed: tuple[int, int],
) -> tuple[list[Op], tuple[int, int]]:
    ops = []
    if chosen.blur:
        spec = kernels.sample_blur_kernel(
            rng, kernel_sizes=st.kernel_sizes, sinc_prob=st.sinc_prob,
            sinc_omega_range=st.sinc_omega_range, kernel_types=st.kernel_types,
            kernel_probs=st.kernel_probs, sigma_x_range=st.sigma_x_range,
            sigma_y_range=st.sigma_y_range, rotation_range=st.rotation_range,
            betag_range=st.betag_range, betap_range=st.betap_range,
        )
        ops.append(Op("blur", stage, {"kernel": spec}))
    scale = chosen.scale
    # torch's interpolate truncates: floor(size * scale), of this round's input
    # ("current", scale_factor=) or of the original frame ("original", size=).
    base = hw if st.resize_relative_to == "current" else orig_hw
    new_hw = (max(1, int(base[0] * scale)), max(1, int(base[1] * scale)))
    ops.append(Op("resize", stage, {
        "direction": chosen.direction, "scale": scale, "hw": new_hw,
        "scale_factor": scale if st.resize_relative_to == "current" else None,
        "mode": chosen.mode}))
    ops.append(_noise_op(rng, st, stage, chosen.gaussian, gray_field_seed))
    if rng.uniform() < st.jpeg_prob:
        ops.append(Op("clip", stage))
        ops.append(Op("jpeg", stage, {"quality": _uniform(rng, st.jpeg_range)}))
    return ops, new_hw


def plan_realesrgan2(
    rng: np.random.Generator, cfg: Any, hw: tuple[int, int],
    choices: BatchChoices | None = None,
) -> list[Op]:
    """Draw every parameter of one ``realesrgan2`` degradation of an image of size ``hw``:
    the per-pair ones from ``rng``, the per-batch ones from ``choices`` (drawn from
    ``rng`` first when None: a batch of one)."""
    if choices is None:
        choices = draw_batch_choices(rng, cfg)
    orig_hw = (int(hw[0]), int(hw[1]))
    seed = choices.gray_noise_seed
    plan, cur = _stage_ops(rng, cfg.stage1, "stage1", orig_hw, orig_hw, choices.stage1,
                           (seed, 1))
    ops2, cur = _stage_ops(rng, cfg.stage2, "stage2", cur, orig_hw, choices.stage2,
                           (seed, 2))
    plan += ops2
    fin = cfg.final
    resize_first = choices.resize_first
    back = [Op("resize", "final", {"direction": "back", "scale": None, "hw": orig_hw,
                                   "mode": choices.final_mode})]
    if rng.uniform() < fin.sinc_prob:
        spec = kernels.sample_sinc_kernel(rng, fin.sinc_kernel_sizes, fin.sinc_omega_range)
        back.append(Op("blur", "final", {"kernel": spec}))
    compress = [Op("clip", "final"),
                Op("jpeg", "final", {"quality": _uniform(rng, fin.jpeg_range),
                                     "resize_first": resize_first})]
    plan += back + compress if resize_first else compress + back
    return plan


def run_plan(
    image: np.ndarray, plan: Sequence[Op], rng: np.random.Generator,
    trace: list[dict[str, Any]] | None = None,
) -> np.ndarray:
    """Apply ``plan`` to a float32 HxWx3 image in [0, 1]; noise fields come from ``rng``.

    With ``trace`` a list, each executed op is appended as a dict (its sampled numbers
    plus ``out_hw``, the size after it).
    """
    x = image
    for op in plan:
        a = op.args
        if op.name == "blur":
            x = blur(x, kernels.kernel_array(a["kernel"]))
        elif op.name == "resize":
            x = resize(x, a["hw"], a["mode"], a.get("scale_factor"))
        elif op.name == "noise":
            if a["kind"] == "gaussian":
                x = add_gaussian_noise(x, rng, a["sigma"], a["gray"], a.get("gray_field_seed"))
            else:
                x = add_poisson_noise(x, rng, a["scale"], a["gray"])
        elif op.name == "clip":
            x = np.clip(x, 0.0, 1.0)
        elif op.name == "jpeg":
            x = jpeg(x, a["quality"])
        else:
            raise ValueError(f"unknown degradation op {op.name!r}")
        if trace is not None:
            trace.append({"op": op.name, "stage": op.stage, **a, "out_hw": x.shape[:2]})
    return x


def degrade_realesrgan2(
    image: np.ndarray, rng: np.random.Generator, cfg: Any,
    trace: list[dict[str, Any]] | None = None, choices: BatchChoices | None = None,
) -> np.ndarray:
    """AdaSR's second-order degradation of a uint8 HxWx3 image (same shape out)."""
    plan = plan_realesrgan2(rng, cfg, image.shape[:2], choices)
    return _to_uint8(run_plan(_to_float(image), plan, rng, trace))


def degrade_downsample(
    image: np.ndarray, rng: np.random.Generator, cfg: Any,
    trace: list[dict[str, Any]] | None = None, choices: None = None,
) -> np.ndarray:
    """Shrink by a random scale with a random filter, then resize back up (every draw
    per pair)."""
    h, w = image.shape[:2]
    s = float(rng.uniform(*cfg.scale_range))
    small = (max(1, round(h * s)), max(1, round(w * s)))
    down, up = _choice(rng, cfg.down_interpolations), _choice(rng, cfg.up_interpolations)
    x = np.clip(resize(_to_float(image), small, down), 0.0, 1.0)
    x = resize(x, (h, w), up)
    if trace is not None:
        trace.append({"op": "resize", "stage": "downsample", "scale": s, "hw": small,
                      "mode": down, "out_hw": small})
        trace.append({"op": "resize", "stage": "downsample", "hw": (h, w), "mode": up,
                      "out_hw": (h, w)})
    return _to_uint8(x)


def degrade_none(
    image: np.ndarray, rng: np.random.Generator, cfg: Any,
    trace: list[dict[str, Any]] | None = None, choices: None = None,
) -> np.ndarray:
    del rng, cfg, trace, choices
    return image.copy()


_DEGRADERS: dict[str, Callable[..., np.ndarray]] = {
    "none": degrade_none,
    "downsample": degrade_downsample,
    "realesrgan2": degrade_realesrgan2,
}


def _check_names(where: str, names: Any, allowed: Sequence[str]) -> None:
    bad = [n for n in names if n not in allowed]
    if bad or not len(names):
        raise DegradationConfigError(
            f"{where} = {list(names)} is not a non-empty list of {list(allowed)}")


def _check_range(where: str, bounds: Any, lo: float, hi: float) -> None:
    if len(bounds) != 2 or not lo <= bounds[0] <= bounds[1] <= hi:
        raise DegradationConfigError(
            f"{where} = {list(bounds)} must be [low, high] within [{lo}, {hi}]")


def _check_prob(where: str, p: Any) -> None:
    if not 0.0 <= float(p) <= 1.0:
        raise DegradationConfigError(f"{where} = {p} must be a probability in [0, 1]")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise DegradationConfigError naming the first unusable value of the chosen preset."""
    preset = config.get("preset", None)
    if preset not in _DEGRADERS:
        raise DegradationConfigError(
            f"unknown degradation preset {preset!r}; choose one of {PRESETS}")
    p = f"degradation.{preset}"
    if preset == "downsample":
        c = config.downsample
        _check_range(f"{p}.scale_range", c.scale_range, 1e-3, 1.0)
        _check_names(f"{p}.down_interpolations", c.down_interpolations, INTERPOLATION_NAMES)
        _check_names(f"{p}.up_interpolations", c.up_interpolations, INTERPOLATION_NAMES)
    elif preset == "realesrgan2":
        c = config.realesrgan2
        for name in ("stage1", "stage2"):
            st, q = c[name], f"{p}.{name}"
            for key in ("blur_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob",
                        "jpeg_prob"):
                _check_prob(f"{q}.{key}", st[key])
            _check_names(f"{q}.kernel_types", st.kernel_types, kernels.KERNEL_TYPES)
            if len(st.kernel_probs) != len(st.kernel_types) or min(st.kernel_probs) < 0 \
                    or sum(st.kernel_probs) <= 0:
                raise DegradationConfigError(
                    f"{q}.kernel_probs must be {len(st.kernel_types)} non-negative weights, "
                    "one per kernel_types entry")
            if not st.kernel_sizes or any(int(k) % 2 == 0 or int(k) < 1
                                          for k in st.kernel_sizes):
                raise DegradationConfigError(f"{q}.kernel_sizes = {list(st.kernel_sizes)} "
                                             "must be odd sizes such as [3, 5]")
            if len(st.resize_probs) != 3 or min(st.resize_probs) < 0 or \
                    sum(st.resize_probs) <= 0:
                raise DegradationConfigError(
                    f"{q}.resize_probs must be 3 weights (up, down, keep)")
            _check_range(f"{q}.resize_range", st.resize_range, 1e-3, 1e3)
            if not st.resize_range[0] <= 1.0 <= st.resize_range[1]:
                raise DegradationConfigError(
                    f"{q}.resize_range = {list(st.resize_range)} must straddle 1 "
                    "(down U(low, 1), up U(1, high))")
            if st.resize_relative_to not in RESIZE_RELATIVE_TO:
                raise DegradationConfigError(
                    f"{q}.resize_relative_to = {st.resize_relative_to!r}; choose one of "
                    f"{RESIZE_RELATIVE_TO}")
            _check_names(f"{q}.interpolations", st.interpolations, INTERPOLATION_NAMES)
            _check_range(f"{q}.jpeg_range", st.jpeg_range, 1.0, 100.0)
        if c.get("draw_per", None) not in DRAW_PER:
            raise DegradationConfigError(
                f"{p}.draw_per = {c.get('draw_per', None)!r}; choose one of {DRAW_PER}")
        fin, q = c.final, f"{p}.final"
        _check_prob(f"{q}.resize_first_prob", fin.resize_first_prob)
        _check_prob(f"{q}.sinc_prob", fin.sinc_prob)
        _check_names(f"{q}.interpolations", fin.interpolations, INTERPOLATION_NAMES)
        _check_range(f"{q}.jpeg_range", fin.jpeg_range, 1.0, 100.0)


def degrade(
    image: np.ndarray, rng: np.random.Generator, config: ml_collections.ConfigDict,
    trace: list[dict[str, Any]] | None = None, choices: BatchChoices | None = None,
) -> np.ndarray:
    """Degrade one uint8 HxWx3 image with ``config.preset``; output has the same shape.

    ``trace``: pass a list to have each executed op appended (tests, debugging).
    ``choices``: the batch's shared choices (`DegradeSource.batch_choices`; None draws
    them from ``rng``, for this image alone).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"degrade expects a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    preset = config.preset
    if preset not in _DEGRADERS:
        raise DegradationConfigError(
            f"unknown degradation preset {preset!r}; choose one of {PRESETS}")
    return _DEGRADERS[preset](image, rng, config.get(preset, None), trace, choices)


# ------------------------------------------------------------------ transforms


class DegradeSource(grain.transforms.RandomMap):
    """Adds ``source_lq`` = degrade(``source``) to a pair record; driving is untouched."""

    def __init__(self, config: ml_collections.ConfigDict, key: str = "source",
                 out_key: str = "source_lq"):
        validate_config(config)  # fail at pipeline construction, not in a worker
        self.config = config
        self.key = key
        self.out_key = out_key

    def batch_choices(self, batch_rng: np.random.Generator) -> BatchChoices | None:
        """The choices every pair of one batch shares, drawn from ``batch_rng`` (seed it
        from the batch, not the pair); None where each pair draws its own (``draw_per =
        "pair"``, or a preset without shared choices)."""
        if self.config.preset != "realesrgan2" or self.config.realesrgan2.draw_per != "batch":
            return None
        return draw_batch_choices(batch_rng, self.config.realesrgan2)

    def random_map(self, element: dict[str, Any], rng: np.random.Generator,
                   choices: BatchChoices | None = None) -> dict[str, Any]:
        """``choices``: from `batch_choices` of this pair's batch; None: the pair's own."""
        out = dict(element)
        out[self.out_key] = degrade(element[self.key], rng, self.config, choices=choices)
        return out
