"""Degradations: shape/dtype preserved, `none` is identity, detail is really removed."""

import numpy as np
import pytest

from data_pipelines import kernels, synthetic
from data_pipelines.degradation import (
    PRESETS,
    DegradeSource,
    default_degradation_config,
    degrade,
    resize,
)


def _high_freq_energy(img: np.ndarray) -> float:
    """Mean squared Laplacian response: energy near the Nyquist frequency."""
    x = img.astype(np.float64).mean(-1)
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float((lap**2).mean())


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [synthetic.render_frame(i, 3, 128)[0] for i in range(6)]


@pytest.mark.parametrize("preset", PRESETS)
def test_same_shape_and_dtype(preset, images):
    cfg = default_degradation_config(preset)
    rng = np.random.default_rng(0)
    for img in images:
        out = degrade(img, rng, cfg)
        assert out.shape == img.shape and out.dtype == np.uint8


def test_none_is_identity(images):
    cfg = default_degradation_config("none")
    out = DegradeSource(cfg).random_map({"source": images[0]}, np.random.default_rng(0))
    np.testing.assert_array_equal(out["source_lq"], images[0])


@pytest.mark.parametrize("preset", ["downsample", "realesrgan2"])
def test_removes_high_frequencies(preset, images):
    cfg = default_degradation_config(preset)
    rng = np.random.default_rng(1)
    clean = np.mean([_high_freq_energy(img) for img in images])
    # Real-ESRGAN adds noise (high frequency) on some draws; on average over several
    # draws blur + resize + JPEG must still remove detail.
    lq = np.mean([_high_freq_energy(degrade(img, rng, cfg)) for img in images for _ in range(4)])
    assert lq < 0.8 * clean, (lq, clean)


def test_deterministic_given_rng(images):
    cfg = default_degradation_config("realesrgan2")
    a = degrade(images[1], np.random.default_rng(7), cfg)
    b = degrade(images[1], np.random.default_rng(7), cfg)
    np.testing.assert_array_equal(a, b)


def test_driving_untouched(images):
    element = {"source": images[0], "driving": images[1]}
    out = DegradeSource(default_degradation_config("realesrgan2")).random_map(
        element, np.random.default_rng(0))
    assert out["driving"] is images[1]
    assert not np.array_equal(out["source_lq"], images[0])


def test_kernels_are_normalised():
    rng = np.random.default_rng(0)
    st = default_degradation_config("realesrgan2").realesrgan2.stage1
    for _ in range(50):
        spec = kernels.sample_blur_kernel(
            rng, kernel_sizes=st.kernel_sizes, sinc_prob=0.5,
            sinc_omega_range=st.sinc_omega_range, kernel_types=st.kernel_types,
            kernel_probs=st.kernel_probs, sigma_x_range=st.sigma_x_range,
            sigma_y_range=st.sigma_y_range, rotation_range=st.rotation_range,
            betag_range=st.betag_range, betap_range=st.betap_range)
        k = kernels.kernel_array(spec)
        assert k.shape == (spec.size, spec.size) and spec.size in (3, 5)
        assert abs(k.sum() - 1) < 1e-5 and np.isfinite(k).all()
    assert np.isfinite(kernels.sinc_kernel(np.pi / 2, 5)).all()


def test_unknown_preset_is_clear():
    with pytest.raises(ValueError, match="unknown degradation preset"):
        default_degradation_config("bogus")


def test_area_resize_is_torch_adaptive_pooling():
    # torch's interpolate(mode="area") averages integer bins [floor(i n/m), ceil((i+1) n/m)),
    # which overlap when m does not divide n: 3 -> 2 gives mean(x0, x1), mean(x1, x2)
    # (OpenCV's INTER_AREA would weight x1 by half instead).
    x = np.array([0.0, 3.0, 9.0], np.float32)[:, None, None] * np.ones((1, 4, 3), np.float32)
    out = resize(x, (2, 4), "area")
    np.testing.assert_allclose(out[:, 0, 0], [1.5, 6.0])
    # Upscaling 2 -> 3: bins [0, 1), [0, 2), [1, 2).
    up = resize(np.array([[0.0, 4.0]], np.float32)[..., None].repeat(3, -1), (1, 3), "area")
    np.testing.assert_allclose(up[0, :, 0], [0.0, 2.0, 4.0])


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_resize_matches_torch_interpolate(mode):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((40, 52, 3)).astype(np.float32)
    for hw in [(23, 31), (47, 60), (40, 26)]:
        want = torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(2, 0, 1)[None], size=hw, mode=mode)[0]
        np.testing.assert_allclose(resize(x, hw, mode), want.permute(1, 2, 0).numpy(),
                                   atol=1e-4)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_scale_factor_resize_matches_torch(mode):
    # Stage 1 calls interpolate(scale_factor=s): bilinear/bicubic then map coordinates by
    # 1/s, not by the size ratio (up to half a pixel apart at the far edge).
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((40, 52, 3)).astype(np.float32)
    for s in (0.55, 0.7, 1.13):
        hw = (int(40 * s), int(52 * s))
        want = torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(2, 0, 1)[None], scale_factor=s, mode=mode)[0]
        np.testing.assert_allclose(resize(x, hw, mode, scale_factor=s),
                                   want.permute(1, 2, 0).numpy(), atol=1e-4)
