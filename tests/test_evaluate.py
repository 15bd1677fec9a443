"""`python -m asrth_jax.evaluate` on a tiny prepared split of the real clips, and on
synthetic data with the motion metrics from its ground truth."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_inference import random_models, tiny_config_file, tiny_model_config
from tiny_train_config import TEST_MODEL
from train_helpers import TINY

from asrth_jax import akd, checkpoints, config_lib, evaluate, metrics

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
FRAMES = 5


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not (REAL / "529_2.mp4").exists():
        pytest.skip("real clips not available")
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


@pytest.fixture(scope="module")
def evaluated(prepared):
    """One full evaluation, shared by the tests that read its outputs."""
    out = prepared["root"] / "eval"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = evaluate.main(_args(prepared, out))
    return {"out": out, "summary": summary, "printed": printed.getvalue()}


def test_evaluate_prints_every_metric_with_copy_source(evaluated):
    out, summary, printed = evaluated["out"], evaluated["summary"], evaluated["printed"]
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
    assert set(summary["unavailable"]) - {"akd", "aed"} == set(metrics.METRICS) - set(available)
    assert summary["unavailable"]["aed"] == evaluate.AED_UNAVAILABLE  # said why not
    # copy-source is a real floor: finite and within range
    assert 0.0 <= summary["metrics"]["l1"]["copy_source"] < 1.0
    rows = list(csv.DictReader(open(out / "per_video.csv")))
    assert sorted(r["video"] for r in rows) == ["529_2", "tpsmm"]
    columns = {"model_l1", "copy_source_l1", "no_motion_l1"}
    assert all(int(r["frames"]) == FRAMES and columns <= set(r) for r in rows)
    assert json.loads((out / "summary.json").read_text())["num_frames"] == 2 * FRAMES
    assert (out / "contact_sheet.png").stat().st_size > 0
    # real clips carry no ground-truth landmarks: no motion metrics, no note
    assert not {"landmark_error", "moving_l1"} & set(summary["metrics"])
    assert "motion_metrics" not in summary and "landmark_error" not in printed


def test_evaluate_reports_akd_with_copy_source_floor(evaluated):
    pytest.importorskip("ai_edge_litert")
    assert akd.status() is None
    summary, out = evaluated["summary"], evaluated["out"]
    assert "akd" not in summary["unavailable"]
    vals = summary["metrics"]["akd"]
    assert vals["higher_is_better"] is False
    # The real source frame and the real driving frames both have faces: a finite floor,
    # 0 at t=0 and positive once the head moves. The random model draws no face.
    assert math.isfinite(vals["copy_source"]) and vals["copy_source"] > 0
    rates = summary["akd_missing_rate"]
    assert rates["copy_source"] == 0.0 and set(rates) == {"model", "copy_source", "no_motion"}
    assert math.isnan(vals["model"]) == (rates["model"] == 1.0)
    assert "akd" in evaluated["printed"] and "no face" in evaluated["printed"]
    rows = list(csv.DictReader(open(out / "per_video.csv")))
    assert all(math.isfinite(float(r["copy_source_akd"])) for r in rows)


def test_no_motion_is_the_model_driven_by_its_own_source(prepared):
    """With frame 0 only, the driver is the source: model and no-motion are one frame."""
    summary = evaluate.main(_args(prepared, prepared["root"] / "eval_t0", "--max-frames", "1"))
    assert summary["num_frames"] == 2
    for name, vals in summary["metrics"].items():
        assert vals["no_motion"] == pytest.approx(vals["model"], rel=1e-5, abs=1e-6,
                                                  nan_ok=True), name


def test_evaluate_refuses_nonempty_out(prepared, tmp_path, monkeypatch, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    (out / "contact_sheet.png").write_bytes(b"old")
    with pytest.raises(SystemExit) as exc:
        evaluate.main(_args(prepared, out, "--max-videos", "1"))
    assert "not empty" in str(exc.value.code) and "\n" not in str(exc.value.code)
    # Without a landmark detector AKD is left out with one line; the rest still runs.
    monkeypatch.setattr(akd, "status", lambda: "AKD unavailable: no detector here")
    capsys.readouterr()
    summary = evaluate.main(_args(prepared, out, "--max-videos", "1", "--max-frames", "2",
                                  "--overwrite", "--contact-cases", "0"))
    assert summary["num_videos"] == 1 and summary["num_frames"] == 2
    notes = [line for line in capsys.readouterr().err.splitlines() if "AKD" in line]
    assert notes == ["note: AKD unavailable: no detector here; evaluating without AKD"]
    assert "akd" not in summary["metrics"] and "akd_missing_rate" not in summary
    assert summary["unavailable"]["akd"] == "AKD unavailable: no detector here"
    assert math.isfinite(summary["metrics"]["l1"]["copy_source"])
    assert (out / "keep.txt").exists()
    assert not (out / "contact_sheet.png").exists()  # no cases asked: the old sheet is gone


@pytest.fixture(scope="module")
def synthetic_eval(tmp_path_factory):
    """The tiny training config's synthetic test identities (2 videos, 32 px), a random
    tiny model, 4 frames per video in one batch each."""
    root = tmp_path_factory.mktemp("evaluate_synthetic")
    gen, disc = random_models(config_lib.model_config(TEST_MODEL), seed=0)
    ckpt = checkpoints.save_models(str(root / "ckpt"), gen, disc)
    out = root / "eval"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = evaluate.main(["--checkpoint", ckpt, "--config", TINY, "--data", "synthetic",
                                 "--out", str(out), "--quiet", "--batch-size", "4",
                                 "--max-frames", "4", "--akd", "off"])
    return {"out": out, "summary": summary, "printed": printed.getvalue()}


def test_synthetic_evaluation_reports_motion_metrics(synthetic_eval):
    """Landmark transfer error beside the identity-motion error (copy-source's column),
    moving-region L1 beside copy-source's; no-motion (identity deformation) scores the
    identity error."""
    summary, out = synthetic_eval["summary"], synthetic_eval["out"]
    assert summary["num_videos"] == 2 and summary["num_frames"] == 8
    lm, moving, l1 = (summary["metrics"][m] for m in ("landmark_error", "moving_l1", "l1"))
    assert lm["higher_is_better"] is False and moving["higher_is_better"] is False
    for vals in (lm, moving):
        assert all(math.isfinite(vals[k]) for k in ("model", "copy_source", "no_motion"))
    # the heads move (frame 0 scores 0, the others do not)
    assert lm["copy_source"] > 0.5
    assert lm["no_motion"] == pytest.approx(lm["copy_source"], abs=1e-3)
    # the background is the same in both frames: the region concentrates the difference
    assert moving["copy_source"] > 1.5 * l1["copy_source"]
    rows = list(csv.DictReader(open(out / "per_video.csv")))
    for row in rows:
        assert float(row["no_motion_landmark_error"]) == pytest.approx(
            float(row["copy_source_landmark_error"]), abs=1e-3)
        assert math.isfinite(float(row["model_landmark_error"]))
        assert math.isfinite(float(row["model_moving_l1"]))
    printed = synthetic_eval["printed"]
    assert "landmark_error" in printed and "moving_l1" in printed
    assert "identity-motion error" in printed
    assert json.loads((out / "summary.json").read_text())["motion_metrics"]


def test_synthetic_contact_sheet_draws_the_landmark_transfer(synthetic_eval):
    from asrth_jax import media

    sheet = media.read_image(synthetic_eval["out"] / "contact_sheet.png")
    assert sheet.shape[1] == 4 * 32  # source | driving | prediction | landmark transfer
    drawing = sheet[:32, 96:]
    greenish = (drawing[..., 1] > 0.8) & (drawing[..., 0] < 0.4)  # true source landmarks
    assert greenish.sum() > 0 and np.abs(drawing - sheet[:32, :32]).max() > 0.2


def test_akd_all_found_compares_the_references_on_the_same_frames():
    """Each reference's AKD mean leaves out its own misses; `akd_all_found` keeps only the
    frames where every reference has a face, so a model that loses its hardest frames
    does not look better than copy-source for it."""
    frames = evaluate._Frames(["a"], ("akd",), evaluate._Cases("l1", 0), False, False)
    nan = float("nan")
    frames.per_video[0] = {"model_akd": [1.0, nan, 3.0], "copy_source_akd": [2.0, 9.0, 4.0],
                           "no_motion_akd": [5.0, 6.0, nan]}
    common = evaluate._akd_all_found(frames)
    assert common == {"model": 1.0, "copy_source": 2.0, "no_motion": 5.0, "frames": 1}
    frames.per_video[0]["model_akd"] = [nan, nan, nan]
    assert evaluate._akd_all_found(frames)["frames"] == 0
