"""The shipped real-face model (`pretrained/real_64`, README "Real faces") on people it
never saw: one clip of each held-out person of `../shared/data/real_faces` (the manifest's
person hash puts them in the test split; the 1080p clip is left out for time), prepared as
the README does (first 96 frames), evaluated by the FOMM protocol. It follows the driver
better than its own no-motion rendering and than copying the source (AKD on the frames where
all three have a face) and beats no-motion on L1. On the full test split's frame mean it
does not beat copy-source on AKD (README "Real faces")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipelines import folders, prepare

ROOT = Path(__file__).resolve().parents[1]
REAL_FACES = ROOT.parent / "shared" / "data" / "real_faces"
MODEL = ROOT / "pretrained" / "real_64"


def _one_clip_per_person(split: str, max_side: int) -> dict[str, str]:
    """file -> person: the first clip (by name) of every person of `split` whose frames
    are at most `max_side` wide."""
    import csv

    with open(REAL_FACES / "MANIFEST.tsv", newline="") as f:
        rows = sorted(csv.DictReader(f, delimiter="\t"), key=lambda r: r["file"])
    chosen: dict[str, str] = {}
    for row in rows:
        person = row["person_id"]
        if (folders.split_of(person) == split and int(row["width"]) <= max_side
                and person not in chosen.values()):
            chosen[row["file"]] = person
    return chosen


@pytest.fixture(scope="module")
def held_out_summary(tmp_path_factory) -> dict:
    if not REAL_FACES.is_dir():
        pytest.skip("../shared/data/real_faces is missing")
    from asrth_jax import akd, evaluate

    if (why := akd.status()) is not None:
        pytest.skip(why)
    tmp_path = tmp_path_factory.mktemp("real")
    held_out = _one_clip_per_person("test", 512)
    train_clip = dict(list(_one_clip_per_person("train", 256).items())[:1])
    assert len(held_out) >= 5
    videos = tmp_path / "clips"
    videos.mkdir()
    for name in [*held_out, *train_clip]:
        (videos / name).symlink_to(REAL_FACES / name)
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("file\tperson_id\n" + "".join(
        f"{f}\t{p}\n" for f, p in {**held_out, **train_clip}.items()))
    data = tmp_path / "data"
    prepare.main(["--videos", str(videos), "--manifest", str(manifest), "--track-faces",
                  "--size", "64", "--max-frames", "96", "--out", str(data)])
    out = tmp_path / "eval"
    evaluate.main(["--checkpoint", str(MODEL), "--config",
                   str(ROOT / "configs" / "real_small.py"), "--data", str(data),
                   "--max-frames", "8", "--out", str(out), "--quiet", "--akd", "require"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_videos"] >= len(held_out)
    return summary


@pytest.mark.slow
def test_shipped_real_face_model_follows_held_out_drivers(held_out_summary):
    scores, common = held_out_summary["metrics"], held_out_summary["akd_all_found"]
    # AKD on the frames where all three renderings have a face (like for like).
    assert common["model"] < common["no_motion"]
    assert scores["l1"]["model"] < scores["l1"]["no_motion"]
    # A face is found on most of its frames (the synthetic demo model: 3% on real faces).
    assert held_out_summary["akd_missing_rate"]["model"] <= 0.3


@pytest.mark.slow
def test_shipped_real_face_model_beats_copy_source_on_akd_one_clip_per_person(
        held_out_summary):
    """One clip per held-out person, so people with large head motion (p13, p48, p49)
    weigh as much as the one with ten near-still studio clips (p42), which dominates the
    full test split: there (README) the model does NOT beat copy-source on AKD."""
    common = held_out_summary["akd_all_found"]
    assert common["model"] < common["copy_source"]
