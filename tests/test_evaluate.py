"""`python -m asrth_jax.evaluate` on a tiny prepared split of the real clips."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from test_inference import random_models, tiny_config_file, tiny_model_config

from asrth_jax import checkpoints, evaluate, metrics

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(not (REAL / "529_2.mp4").exists(),
                                reason="real clips not available")
FRAMES = 5


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    from data_pipelines import prepare

    root = tmp_path_factory.mktemp("evaluate")
    videos = root / "videos"
    (videos / "train").mkdir(parents=True)
    (videos / "test").mkdir()
    (videos / "train" / "demo.mp4").symlink_to(REAL / "demo_video_1.mp4")
    (videos / "test" / "529_2.mp4").symlink_to(REAL / "529_2.mp4")
    (videos / "test" / "tpsmm.mp4").symlink_to(REAL / "tpsmm_driving.mp4")
    prepare.main(["--videos", str(videos), "--out", str(root / "data"), "--size", "64",
                  "--max-frames", str(FRAMES)])
    gen, disc = random_models(tiny_model_config(), seed=0)
    ckpt = checkpoints.save_models(str(root / "ckpt"), gen, disc)
    return {"root": root, "data": str(root / "data"), "ckpt": ckpt,
            "config": str(tiny_config_file(root / "tiny.py"))}


def _args(p, out, *extra):
    return ["--checkpoint", p["ckpt"], "--config", p["config"], "--data", p["data"],
            "--out", str(out), "--quiet", "--batch-size", "3", *extra]


def test_evaluate_prints_every_metric_with_copy_source(prepared, capsys):
    out = prepared["root"] / "eval"
    summary = evaluate.main(_args(prepared, out))
    printed = capsys.readouterr().out
    available = [m for m in metrics.METRICS if m not in metrics.unavailable_metrics()]
    assert {"l1", "psnr", "ssim"} <= set(available)
    for name in metrics.METRICS:
        assert name in printed
    for name in available:
        vals = summary["metrics"][name]
        assert set(vals) >= {"model", "copy_source", "no_motion"}
        assert all(math.isfinite(vals[k]) for k in ("model", "copy_source", "no_motion"))
    assert "no-motion" in printed
    assert summary["num_videos"] == 2 and summary["num_frames"] == 2 * FRAMES
    assert set(summary["unavailable"]) == set(metrics.METRICS) - set(available)
    # copy-source is a real floor: finite and within range
    assert 0.0 <= summary["metrics"]["l1"]["copy_source"] < 1.0
    rows = list(csv.DictReader(open(out / "per_video.csv")))
    assert sorted(r["video"] for r in rows) == ["529_2", "tpsmm"]
    assert all(int(r["frames"]) == FRAMES and "copy_l1" in r and "no_motion_l1" in r
               for r in rows)
    assert json.loads((out / "summary.json").read_text())["num_frames"] == 2 * FRAMES
    assert (out / "contact_sheet.png").stat().st_size > 0


def test_no_motion_is_the_model_driven_by_its_own_source(prepared):
    """With frame 0 only, the driver is the source: model and no-motion are one frame."""
    summary = evaluate.main(_args(prepared, prepared["root"] / "eval_t0", "--max-frames", "1"))
    assert summary["num_frames"] == 2
    for name, vals in summary["metrics"].items():
        assert vals["no_motion"] == pytest.approx(vals["model"], rel=1e-5, abs=1e-6), name


def test_evaluate_refuses_nonempty_out(prepared, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SystemExit) as exc:
        evaluate.main(_args(prepared, out, "--max-videos", "1"))
    assert "not empty" in str(exc.value.code) and "\n" not in str(exc.value.code)
    summary = evaluate.main(_args(prepared, out, "--max-videos", "1", "--max-frames", "2",
                                  "--overwrite"))
    assert summary["num_videos"] == 1 and summary["num_frames"] == 2
