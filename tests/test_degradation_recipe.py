"""`realesrgan2` draws AdaSR's numbers: sampled-parameter statistics from many plans.

Plans hold every sampled number without touching pixels, so thousands are cheap.
Frequencies are checked within 4.5 binomial standard errors (a false alarm about once
in 150,000 checks); ranges are checked exactly.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_pipelines import degradation, kernels
from data_pipelines.degradation import Op, default_degradation_config, plan_realesrgan2

N = 4000
SIZE = 512


def _plans(cfg=None, n: int = N, seed: int = 0) -> list[list[Op]]:
    cfg = cfg or default_degradation_config("realesrgan2").realesrgan2
    rng = np.random.default_rng(seed)
    return [plan_realesrgan2(rng, cfg, (SIZE, SIZE)) for _ in range(n)]


@pytest.fixture(scope="module")
def plans() -> list[list[Op]]:
    return _plans()


def _ops(plans, name: str, stage: str) -> list[Op]:
    return [op for plan in plans for op in plan if op.name == name and op.stage == stage]


def _assert_rate(hits: int, n: int, p: float, what: str) -> None:
    se = math.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) < 4.5 * se + 1e-12, f"{what}: {hits}/{n} vs p {p}"


def test_each_call_has_exactly_two_jpegs_none_in_stage2(plans):
    for plan in plans:
        jpegs = [op.stage for op in plan if op.name == "jpeg"]
        assert jpegs == ["stage1", "final"]
        # Each JPEG sees a clipped image (the reference clamps right before it).
        for i, op in enumerate(plan):
            if op.name == "jpeg":
                assert plan[i - 1].name == "clip"


def test_jpeg_quality_is_continuous_in_10_25(plans):
    q = np.array([op.args["quality"] for plan in plans for op in plan if op.name == "jpeg"])
    assert q.min() >= 10 and q.max() <= 25
    assert np.mean(q != np.round(q)) > 0.99  # continuous, not integer qualities
    assert abs(q.mean() - 17.5) < 4.5 * (15 / math.sqrt(12)) / math.sqrt(len(q))


def test_stage_op_order(plans):
    for plan in plans[:500]:
        names = [(op.stage, op.name) for op in plan]
        s1 = [n for s, n in names if s == "stage1"]
        s2 = [n for s, n in names if s == "stage2"]
        fin = [n for s, n in names if s == "final"]
        assert s1 == ["blur", "resize", "noise", "clip", "jpeg"]  # blur always in stage 1
        assert s2 in (["blur", "resize", "noise"], ["resize", "noise"])
        back = ["resize", "blur"] if "blur" in fin else ["resize"]
        assert fin in (back + ["clip", "jpeg"], ["clip", "jpeg"] + back)
        assert [s for s, _ in names] == sorted([s for s, _ in names],
                                              key=["stage1", "stage2", "final"].index)


def test_stage2_resizes_to_an_absolute_size(plans):
    r1 = _ops(plans, "resize", "stage1")
    r2 = _ops(plans, "resize", "stage2")
    for op in r1 + r2:
        # Both are floor(512 x s): stage 1 of its (original-size) input, stage 2 of the
        # original size whatever stage 1 did (not a cumulative scale, no [0.15, 1.5] clip).
        assert op.args["hw"] == (int(SIZE * op.args["scale"]),) * 2
    sizes2 = np.array([op.args["hw"][0] for op in r2])
    assert sizes2.min() >= SIZE // 2 == 256 and sizes2.max() <= int(SIZE * 1.2)
    assert sizes2.min() <= 258  # the bound is reached, ~0.4 x 4000 draws down U(0.5, 1)
    sizes1 = np.array([op.args["hw"][0] for op in r1])
    assert sizes1.min() >= 256 and sizes1.max() <= int(SIZE * 1.2)
    # The smallest size the chain ever holds at 512 is 256.
    every = [op.args["hw"][0] for plan in plans for op in plan if op.name == "resize"]
    assert SIZE // 2 <= min(every) <= 258


@pytest.mark.parametrize(("stage", "probs"), [("stage1", (0.2, 0.7, 0.1)),
                                              ("stage2", (0.3, 0.4, 0.3))])
def test_resize_direction_rates_and_ranges(plans, stage, probs):
    ops = _ops(plans, "resize", stage)
    for direction, p in zip(("up", "down", "keep"), probs, strict=True):
        chosen = [op.args["scale"] for op in ops if op.args["direction"] == direction]
        _assert_rate(len(chosen), len(ops), p, f"{stage} {direction}")
        lo, hi = {"up": (1.0, 1.2), "down": (0.5, 1.0), "keep": (1.0, 1.0)}[direction]
        assert lo <= min(chosen) and max(chosen) <= hi
    modes = [op.args["mode"] for op in ops]
    for mode in ("area", "bilinear", "bicubic"):
        _assert_rate(modes.count(mode), len(modes), 1 / 3, f"{stage} mode {mode}")


def test_blur_rates_sinc_probability_and_kernel_types(plans):
    blur1 = _ops(plans, "blur", "stage1")
    blur2 = _ops(plans, "blur", "stage2")
    assert len(blur1) == N
    _assert_rate(len(blur2), N, 0.8, "stage-2 blur rate")
    for stage_ops in (blur1, blur2):
        specs = [op.args["kernel"] for op in stage_ops]
        _assert_rate(sum(s.kind == "sinc" for s in specs), len(specs), 0.1, "sinc")
        _assert_rate(sum(s.size == 3 for s in specs), len(specs), 0.5, "size 3")
        assert {s.size for s in specs} == {3, 5}
        mixed = [s for s in specs if s.kind != "sinc"]
        for kind, p in zip(kernels.KERNEL_TYPES, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
                           strict=True):
            _assert_rate(sum(s.kind == kind for s in mixed), len(mixed), p, kind)
        for s in mixed:
            assert 0.1 <= s.sigma_x <= 0.5
            if s.kind.endswith("aniso"):
                assert 0.1 <= s.sigma_y <= 0.5 and -math.pi <= s.theta <= math.pi
            else:
                assert s.sigma_y == s.sigma_x and s.theta == 0.0
        for s in specs:
            if s.kind == "sinc":
                assert math.pi / 3 <= s.omega_c <= math.pi


@pytest.mark.parametrize(("stage", "betap"), [("stage1", (0.5, 1.2)), ("stage2", (1.0, 1.2))])
def test_shape_betas(plans, stage, betap):
    specs = [op.args["kernel"] for op in _ops(plans, "blur", stage)]
    bg = np.array([s.beta for s in specs if s.kind.startswith("generalized")])
    bp = np.array([s.beta for s in specs if s.kind.startswith("plateau")])
    assert bg.min() >= 0.2 and bg.max() <= 1.0
    # basicsr draws below or above 1 with equal odds; U(1, 1) is exactly 1.
    _assert_rate(int(np.sum(bg == 1.0)), len(bg), 0.5, "betag == 1")
    assert bp.min() >= betap[0] and bp.max() <= betap[1]
    _assert_rate(int(np.sum(bp <= 1.0)), len(bp), 0.5, "betap <= 1")
    for s in specs:
        if not s.kind.startswith(("generalized", "plateau")):
            assert s.beta == 1.0


def test_noise_draws(plans):
    for stage in ("stage1", "stage2"):
        ops = _ops(plans, "noise", stage)
        assert len(ops) == N
        gauss = [op.args["sigma"] for op in ops if op.args["kind"] == "gaussian"]
        poisson = [op.args["scale"] for op in ops if op.args["kind"] == "poisson"]
        _assert_rate(len(gauss), N, 0.5, f"{stage} gaussian")
        _assert_rate(sum(op.args["gray"] for op in ops), N, 0.4, f"{stage} gray")
        assert 1.0 <= min(gauss) and max(gauss) <= 10.0
        assert 0.05 <= min(poisson) and max(poisson) <= 1.0


def test_final_order_and_sinc(plans):
    jpegs = _ops(plans, "jpeg", "final")
    _assert_rate(sum(op.args["resize_first"] for op in jpegs), N, 0.5, "resize first")
    sincs = [op.args["kernel"] for op in _ops(plans, "blur", "final")]
    _assert_rate(len(sincs), N, 0.8, "final sinc")
    assert {s.kind for s in sincs} == {"sinc"} and {s.size for s in sincs} == {3, 5}
    assert all(math.pi / 3 <= s.omega_c <= math.pi for s in sincs)
    for plan in plans[:500]:
        fin = [op for op in plan if op.stage == "final"]
        first_resize = next(i for i, op in enumerate(fin) if op.name == "resize")
        jpeg_at = next(i for i, op in enumerate(fin) if op.name == "jpeg")
        assert (first_resize < jpeg_at) == fin[jpeg_at].args["resize_first"]
        assert fin[first_resize].args["hw"] == (SIZE, SIZE)


def test_executed_trace_is_the_plan():
    cfg = default_degradation_config("realesrgan2")
    img = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for seed in range(6):
        trace: list = []
        out = degradation.degrade(img, np.random.default_rng(seed), cfg, trace=trace)
        plan = plan_realesrgan2(np.random.default_rng(seed), cfg.realesrgan2, (48, 64))
        assert [(t["op"], t["stage"]) for t in trace] == [(op.name, op.stage) for op in plan]
        assert sum(t["op"] == "jpeg" for t in trace) == 2
        for t in trace:
            if t["op"] == "resize":
                assert tuple(t["out_hw"]) == t["hw"]
        assert out.shape == img.shape and out.dtype == np.uint8


def test_every_number_is_a_config_value():
    cfg = default_degradation_config("realesrgan2").realesrgan2
    cfg.stage2.jpeg_prob = 1.0
    cfg.stage2.resize_relative_to = "current"
    cfg.stage2.resize_probs = [0.0, 1.0, 0.0]
    cfg.stage1.resize_probs = [0.0, 1.0, 0.0]
    cfg.final.resize_first_prob = 1.0
    for plan in _plans(cfg, n=200):
        assert sum(op.name == "jpeg" for op in plan) == 3
        (h1, _), (h2, _) = (op.args["hw"] for op in plan if op.name == "resize"
                            and op.stage != "final")
        s2 = next(op.args["scale"] for op in plan if op.name == "resize"
                  and op.stage == "stage2")
        assert h2 == int(h1 * s2)  # cumulative when asked
        assert [op.name for op in plan if op.stage == "final"][-1] == "jpeg"


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("realesrgan2.stage2.resize_relative_to", "cumulative", "resize_relative_to"),
    ("realesrgan2.stage1.interpolations", ["lanczos"], "stage1.interpolations"),
    ("realesrgan2.final.jpeg_range", [30.0, 10.0], "final.jpeg_range"),
    ("realesrgan2.stage2.blur_prob", 1.5, "stage2.blur_prob"),
    ("realesrgan2.stage1.kernel_sizes", [4], "kernel_sizes"),
    ("realesrgan2.stage1.kernel_probs", [1.0], "kernel_probs"),
])
def test_bad_config_values_fail_at_construction(key, value, needle):
    cfg = default_degradation_config("realesrgan2")
    node = cfg
    *path, last = key.split(".")
    for part in path:
        node = node[part]
    node[last] = value
    with pytest.raises(degradation.DegradationConfigError, match=needle):
        degradation.DegradeSource(cfg)


def test_train_refuses_a_bad_degradation_value_in_one_line(tmp_path, jax_env):
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "asrth_jax.train",
         f"--config={repo / 'tests' / 'tiny_train_config.py'}", f"--workdir={tmp_path / 'w'}",
         "--config.data.degradation.realesrgan2.stage2.resize_relative_to=cumulative"],
        env=jax_env, capture_output=True, text=True, timeout=300, cwd=repo)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "stage2.resize_relative_to" in line and "cumulative" in line, line
    assert not (tmp_path / "w" / "checkpoints").exists()
