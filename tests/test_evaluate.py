"""`python -m asrth_jax.evaluate` on a tiny prepared split of the real clips."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import pytest
from test_inference import random_models, tiny_config_file, tiny_model_config

from asrth_jax import akd, checkpoints, evaluate, metrics

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
    assert set(summary["unavailable"]) - {"akd"} == set(metrics.METRICS) - set(available)
    # copy-source is a real floor: finite and within range
    assert 0.0 <= summary["metrics"]["l1"]["copy_source"] < 1.0
    rows = list(csv.DictReader(open(out / "per_video.csv")))
    assert sorted(r["video"] for r in rows) == ["529_2", "tpsmm"]
    assert all(int(r["frames"]) == FRAMES and "copy_l1" in r and "no_motion_l1" in r
               for r in rows)
    assert json.loads((out / "summary.json").read_text())["num_frames"] == 2 * FRAMES
    assert (out / "contact_sheet.png").stat().st_size > 0


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
    assert all(math.isfinite(float(r["copy_akd"])) for r in rows)


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
