"""`realesrgan2`'s once-per-batch choices: the reference degrades a whole GPU batch at
once, so each stage's blur on/off, resize direction/scale/mode and noise kind, the final
order and final resize mode, and the gray Gaussian noise field are the batch's; the
training pipeline shares them within a global batch (`draw_per="batch"`, the default)."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import degradation, pipeline
from data_pipelines.config import default_data_config
from data_pipelines.degradation import (
    DegradeSource,
    add_gaussian_noise,
    default_degradation_config,
    draw_batch_choices,
    plan_realesrgan2,
    run_plan,
)

BATCH, BATCHES = 4, 6


def _config(draw_per: str = "batch"):
    c = default_data_config()
    c.image_size = 32
    c.synthetic.num_train_identities = 8
    c.synthetic.frames_per_video = 4
    c.degradation.preset = "realesrgan2"
    c.degradation.realesrgan2.draw_per = draw_per
    c.degradation.realesrgan2.stage1.gray_noise_prob = 0.9  # gray fields in most batches
    c.degradation.realesrgan2.stage2.gray_noise_prob = 0.9
    return c


def _shared(trace: list[dict]) -> tuple:
    """What the reference chooses once per batch, read from one executed trace."""
    out = []
    for stage in ("stage1", "stage2"):
        ops = [t for t in trace if t["stage"] == stage]
        resize = next(t for t in ops if t["op"] == "resize")
        noise = next(t for t in ops if t["op"] == "noise")
        out += [any(t["op"] == "blur" for t in ops), resize["direction"], resize["scale"],
                resize["mode"], noise["kind"]]
    final = [t for t in trace if t["stage"] == "final"]
    names = [t["op"] for t in final]
    out += [names.index("resize") < names.index("jpeg"),
            next(t for t in final if t["op"] == "resize")["mode"]]
    return tuple(out)


def _gray_fields(trace: list[dict]) -> set:
    return {t["gray_field_seed"] for t in trace if "gray_field_seed" in t}


def _traces(monkeypatch, config) -> list[list[list[dict]]]:
    """Executed traces of BATCHES training batches, [batch][pair]."""
    traces: list[list[dict]] = []
    real = degradation.degrade

    def traced(image, rng, cfg, trace=None, choices=None):
        traces.append([])
        return real(image, rng, cfg, traces[-1], choices)

    monkeypatch.setattr(degradation, "degrade", traced)
    ds = pipeline.make_train_dataset(config, seed=5, per_host_batch_size=BATCH)
    for b in range(BATCHES):
        ds[b]
    assert len(traces) == BATCH * BATCHES
    return [traces[b * BATCH:(b + 1) * BATCH] for b in range(BATCHES)]


def test_a_batch_shares_the_reference_batch_choices(monkeypatch):
    batches = _traces(monkeypatch, _config("batch"))
    per_batch = []
    for batch in batches:
        shared = {_shared(t) for t in batch}
        assert len(shared) == 1, shared  # every pair of the batch chose alike
        assert len(set().union(*map(_gray_fields, batch))) <= 2  # one field a stage
        # Per-pair draws stay per pair: the JPEG qualities of a batch all differ.
        qualities = [t["quality"] for trace in batch for t in trace if t["op"] == "jpeg"]
        assert len(set(qualities)) == len(qualities)
        per_batch.append(shared.pop())
    # Across batches the choices vary (each field of the tuple that is random varies).
    assert len(set(per_batch)) == BATCHES
    for i in (1, 3, 6, 8, 10):  # stage-1/-2 direction, mode; the final resize mode
        assert len({c[i] for c in per_batch}) > 1, i


def test_draw_per_pair_keeps_the_old_per_pair_draws(monkeypatch):
    batches = _traces(monkeypatch, _config("pair"))
    assert all(len({_shared(t) for t in batch}) == BATCH for batch in batches)


def test_the_gray_gaussian_field_is_one_for_the_batch():
    """Run only the stage-1 noise of two plans of one batch on a flat image: both pairs
    get the same (h, w) field, each scaled by its own sigma (basicsr's gray noise)."""
    cfg = default_degradation_config("realesrgan2").realesrgan2
    cfg.stage1.gaussian_noise_prob = 1.0
    cfg.stage1.gray_noise_prob = 1.0
    choices = draw_batch_choices(np.random.default_rng(0), cfg)
    flat = np.full((24, 24, 3), 0.5, np.float32)
    fields = []
    for pair in range(2):
        rng = np.random.default_rng(100 + pair)
        plan = plan_realesrgan2(rng, cfg, flat.shape[:2], choices)
        noise = [op for op in plan if op.name == "noise" and op.stage == "stage1"]
        sigma = noise[0].args["sigma"]
        out = run_plan(flat, noise, rng)
        assert np.all(out == out[..., :1])  # gray: one value for the three channels
        fields.append((out[..., 0] - 0.5) * 255.0 / sigma)
    assert np.abs(fields[0]).mean() > 0.5
    np.testing.assert_allclose(fields[0], fields[1], atol=1e-3)
    # Without a batch seed each pair's gray field is its own.
    a = add_gaussian_noise(flat, np.random.default_rng(1), 5.0, True)
    b = add_gaussian_noise(flat, np.random.default_rng(2), 5.0, True)
    assert not np.allclose(a, b)


def test_without_batch_choices_a_pair_is_a_batch_of_one():
    """Evaluation degrades each video's source alone: the pair's rng draws the choices."""
    cfg = default_degradation_config("realesrgan2")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    source = DegradeSource(cfg)
    a = source.random_map({"source": image}, np.random.default_rng(4))["source_lq"]
    b = source.random_map({"source": image}, np.random.default_rng(4))["source_lq"]
    np.testing.assert_array_equal(a, b)
    assert source.batch_choices(np.random.default_rng(0)) is not None
    cfg.realesrgan2.draw_per = "pair"
    assert DegradeSource(cfg).batch_choices(np.random.default_rng(0)) is None


def test_a_bad_draw_per_is_one_line():
    cfg = default_degradation_config("realesrgan2")
    cfg.realesrgan2.draw_per = "gpu"
    with pytest.raises(degradation.DegradationConfigError, match="draw_per") as err:
        DegradeSource(cfg)
    assert "\n" not in str(err.value)
