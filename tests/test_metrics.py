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
    l1 = metrics.l1(pred, target)
    np.testing.assert_allclose(l1, np.abs(pred - target).mean(axis=(1, 2, 3)), rtol=1e-5)
    mse = np.square(pred - target).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(metrics.psnr(pred, target), -10 * np.log10(mse), rtol=1e-4)
    same = metrics.compute_metrics(target, target, ("l1", "psnr", "ssim"))
    assert np.all(same["l1"] == 0) and np.all(np.isinf(same["psnr"]))
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-5)
    worse = metrics.ssim(*_pair(noise=0.3))
    assert np.all(worse < metrics.ssim(pred, target)) and np.all(worse < 1)


def test_lpips_orders_distortions():
    if metrics.lpips_status() is not None:
        pytest.skip(metrics.lpips_status())
    pred, target = _pair(size=64, noise=0.05)
    worse, _ = _pair(size=64, noise=0.3)
    same = metrics.lpips(target, target)
    assert same.shape == (3,) and np.all(np.abs(same) < 1e-5)
    assert np.all(metrics.lpips(worse, target) > metrics.lpips(pred, target))


def test_compute_metrics_reports_every_available_metric():
    pred, target = _pair(size=64)
    out = metrics.compute_metrics(pred, target)
    missing = metrics.unavailable_metrics()
    assert set(out) | set(missing) == set(metrics.METRICS)
    assert not set(out) & set(missing)
    for why in missing.values():
        assert "\n" not in why and "unavailable" in why
    for values in out.values():
        assert np.asarray(values).shape == (3,)
