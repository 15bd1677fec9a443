"""Reconstruction metrics: per-image values on NHWC [0, 1] arrays."""

from __future__ import annotations

import numpy as np
import pytest

from asrth_jax import metrics


def _pair(seed: int = 0, noise: float = 0.1, size: int = 32):
    rng = np.random.default_rng(seed)
    target = rng.uniform(size=(3, size, size, 3)).astype(np.float32)
    pred = np.clip(target + noise * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
    return pred, target


def test_l1_psnr_ssim_values():
    pred, target = _pair()
    scores = {k: np.asarray(v) for k, v in metrics.image_scores(pred, target).items()}
    np.testing.assert_allclose(scores["l1"], np.abs(pred - target).mean(axis=(1, 2, 3)),
                               rtol=1e-5)
    mse = np.square(pred - target).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(scores["psnr"], -10 * np.log10(mse), rtol=1e-4)
    same = {k: np.asarray(v) for k, v in metrics.image_scores(target, target).items()}
    assert np.all(same["l1"] == 0) and np.all(np.isinf(same["psnr"]))
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-5)
    # the evaluation floors the MSE: identical frames score 100 dB, not +inf
    capped = metrics.image_scores(target, target, psnr_floor_mse=1e-10)["psnr"]
    np.testing.assert_allclose(capped, 100.0, rtol=1e-6)
    worse = np.asarray(metrics.image_scores(*_pair(noise=0.3))["ssim"])
    assert np.all(worse < scores["ssim"]) and np.all(worse < 1)


def test_lpips_orders_distortions():
    if metrics.lpips_status() is not None:
        pytest.skip(metrics.lpips_status())
    pred, target = _pair(size=64, noise=0.05)
    worse, _ = _pair(size=64, noise=0.3)
    same = metrics.lpips(target, target)
    assert same.shape == (3,) and np.all(np.abs(same) < 1e-5)
    assert np.all(metrics.lpips(worse, target) > metrics.lpips(pred, target))
