"""Inference core: source encoded once, one compilation per video, relative motion."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from asrth_jax import inference, model_loading
from asrth_jax.models import adasr


def tiny_model_config():
    """Our config equal to the torch reference's tiny model (64x64 input)."""
    ref = pytest.importorskip("reference_torch")
    from test_parity_torch import tiny_config_from_reference

    return tiny_config_from_reference(ref.tiny_model_params())


def randomize(module: nnx.Module, seed: int = 0) -> nnx.Module:
    """Fills every variable of a (possibly abstract) module with random values.

    Much faster than eager initialisation on CPU (which compiles one program per
    initialiser shape): kernels ~ N(0, 1/fan_in), BatchNorm stats identity-like,
    spectral vectors unit norm.
    """
    rng = np.random.default_rng(seed)
    state = nnx.state(module)

    def fill(path, value):
        name = getattr(path[-1], "key", path[-1])
        shape, dtype = tuple(value.shape), value.dtype
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1])) or 1
            return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)
        if name in ("var", "scale"):
            return (1.0 + 0.1 * rng.random(shape)).astype(dtype)
        if name in ("u", "v"):
            x = rng.standard_normal(shape)
            return (x / np.linalg.norm(x)).astype(dtype)
        return (0.05 * rng.standard_normal(shape)).astype(dtype)

    pure = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)
    return module


def random_models(model_config, seed: int = 0):
    gen = randomize(adasr.abstract_generator(model_config), seed)
    disc = randomize(adasr.abstract_discriminator(model_config), seed + 1)
    return gen, disc


def tiny_config_file(path: Path) -> Path:
    """A config file (as `--config` takes) for the tiny model at 64x64."""
    overrides = tiny_model_config().to_dict()
    path.write_text(
        "from asrth_jax import config_lib\n\n\n"
        "def get_config():\n"
        "    c = config_lib.base_config()\n"
        "    c.image_size = 64\n"
        f"    c.model = config_lib.model_config({overrides!r})\n"
        "    c.data.eval.batch_size = 4\n"
        "    return config_lib.finalize(c)\n")
    return path


@pytest.fixture(scope="module")
def animator():
    gen, _ = random_models(tiny_model_config(), seed=0)
    return inference.make_animator(gen, batch_size=4)


def _clip(n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3), np.uint8)
    return np.stack([np.roll(base, i, axis=1) for i in range(n)])


def _compiled_renderers() -> int:
    """Programs the module-level renderer holds (one per trace = compilation)."""
    return inference._render._cache_size()


def test_source_once_and_one_compilation(animator):
    frames = _clip(10)  # 10 frames, batch 4: batches 4, 4, 2 (padded)
    before = _compiled_renderers()
    calls = dict(animator.call_counts)
    src = animator.encode_source(frames[0])
    motion = animator.prepare_motion(src, frames[0], relative=True, adapt_scale=True)
    out = animator.render(src, frames, motion)
    assert out.shape == (10, 64, 64, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert animator.call_counts["encode"] - calls.get("encode", 0) == 1
    assert animator.call_counts["render"] - calls.get("render", 0) == 3
    # at most one trace of the renderer for the whole video (zero if already cached)
    assert _compiled_renderers() - before <= 1
    # a second video, other motion settings: no new compilation at all
    compiled = _compiled_renderers()
    src2 = animator.encode_source(frames[5])
    motion2 = animator.prepare_motion(src2, frames[3], relative=True, yaw=15.0, roll=-5.0)
    out2 = animator.render(src2, frames[:7], motion2)
    assert out2.shape == (7, 64, 64, 3)
    assert _compiled_renderers() == compiled
    # the padded last batch gives the same frames as an unpadded render
    again = animator.render(src, frames[8:], motion)
    np.testing.assert_allclose(again, out[8:], atol=1e-5)


def test_animators_of_one_architecture_share_compiled_programs(animator):
    """The graph definition is the static key: a second animator over an equal
    architecture (other weights) reuses the first one's programs."""
    frames = _clip(4)
    src = animator.encode_source(frames[0])
    animator.render(src, frames, animator.prepare_motion(src, frames[0]))
    compiled = _compiled_renderers()
    other_weights, _ = random_models(tiny_model_config(), seed=1)
    twin = inference.make_animator(other_weights, batch_size=4)
    assert hash(twin.graphdef) == hash(animator.graphdef) and twin.graphdef == animator.graphdef
    src_twin = twin.encode_source(frames[0])
    out = twin.render(src_twin, frames, twin.prepare_motion(src_twin, frames[0]))
    assert _compiled_renderers() == compiled
    assert np.abs(out - animator.render(src, frames, animator.prepare_motion(
        src, frames[0]))).max() > 0  # its own weights, not the first one's


def test_graph_definitions_are_static_jit_keys():
    """Equal architectures hash and compare equal (so Animators share one compiled
    program); another keypoint count is another program."""
    config = tiny_model_config()
    other = config.copy_and_resolve_references()
    other.common.num_kp = config.common.num_kp + 1

    def key(model_config):
        return nnx.split(adasr.abstract_generator(model_config))[0]

    assert key(config) == key(config) and hash(key(config)) == hash(key(config))
    assert key(other) != key(config)


def test_encoded_appearance_comes_from_the_degraded_copy(animator):
    """`encode_source(image, image_lq)`: keypoints and pose of `image`, the appearance
    volume of `image_lq` (AdaSR's degraded source, as training encodes it)."""
    clean, degraded = _clip(2)
    both = animator.encode_source(clean, degraded)
    plain, of_degraded = animator.encode_source(clean), animator.encode_source(degraded)
    np.testing.assert_allclose(both.kp_source, plain.kp_source, atol=1e-6)
    np.testing.assert_allclose(both.feature_3d, of_degraded.feature_3d, atol=1e-6)
    assert np.abs(np.asarray(both.feature_3d) - np.asarray(plain.feature_3d)).max() > 0


def test_relative_motion_reproduces_source_keypoints(animator):
    frames = _clip(6)
    src = animator.encode_source(frames[0])
    motion = animator.prepare_motion(src, frames[0], relative=True)
    _, kp = animator.render(src, frames, motion, return_keypoints=True)
    np.testing.assert_allclose(kp[0], np.asarray(src.kp_source[0]), atol=1e-5)
    # absolute motion with driving == source also gives the source keypoints
    absolute = animator.prepare_motion(src, relative=False)
    _, kp_abs = animator.render(src, frames[:1], absolute, return_keypoints=True)
    np.testing.assert_allclose(kp_abs[0], np.asarray(src.kp_source[0]), atol=1e-5)
    # later frames move
    assert np.abs(kp[3] - kp[0]).max() > 0


def test_free_view_overrides_angles(animator):
    frames = _clip(4)
    src = animator.encode_source(frames[0])
    plain = animator.prepare_motion(src, relative=False)
    turned = animator.prepare_motion(src, relative=False, yaw=30.0, pitch=0.0, roll=0.0)
    _, kp_plain = animator.render(src, frames, plain, return_keypoints=True)
    _, kp_turned = animator.render(src, frames, turned, return_keypoints=True)
    assert np.abs(kp_plain - kp_turned).max() > 1e-3
    # with fixed angles, the rotation part no longer depends on the driving pose
    zero = animator.prepare_motion(src, relative=False, yaw=0.0, pitch=0.0, roll=0.0)
    _, kp_zero = animator.render(src, frames, zero, return_keypoints=True)
    rot = kp_turned - kp_zero  # same t and expression per frame: rotation difference only
    np.testing.assert_allclose(rot, np.broadcast_to(rot[:1], rot.shape), atol=1e-5)


def test_movement_scale_is_the_reference_3d_hull_volume_ratio():
    """The reference applies ConvexHull(...).volume to the (K, 3) keypoints."""
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(0)
    for _ in range(5):
        src, drv = rng.standard_normal((2, 15, 3))
        want = np.sqrt(ConvexHull(src).volume) / np.sqrt(ConvexHull(drv).volume)
        assert inference.movement_scale(src, drv) == pytest.approx(want, rel=1e-12)
    kp = rng.standard_normal((15, 3))
    # Volume, not the area of x, y: a driver 0.8x the source's size gives 1.25^1.5 ...
    assert inference.movement_scale(kp, 0.8 * kp) == pytest.approx(1.25 ** 1.5)
    # ... and a 40-degree yaw of the same keypoints changes nothing.
    yaw = np.deg2rad(40.0)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    assert inference.movement_scale(kp, kp @ rot.T) == pytest.approx(1.0)


def test_movement_scale_of_a_flat_hull_is_a_one_line_error():
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    cube = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
    for src, drv, which in ((square, cube, "the source"), (cube, square, "initial driving")):
        with pytest.raises(inference.MovementScaleError) as err:
            inference.movement_scale(src, drv)
        message = str(err.value)
        assert which in message and "--adapt-scale" in message and "\n" not in message


def test_load_errors_are_one_line(tmp_path):
    import ml_collections

    config = ml_collections.ConfigDict({"model": tiny_model_config(), "image_size": 64})
    with pytest.raises(model_loading.ModelLoadError) as err:
        model_loading.load_generator_side(config, checkpoint=str(tmp_path / "missing"))
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(model_loading.ModelLoadError):
        model_loading.load_generator_side(config)


