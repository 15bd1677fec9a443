"""prepare on a flat folder: a stable per-identity split, skipped clips reported."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipelines import face_mesh, folders, prepare
from data_pipelines.errors import AsrthError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _names(split: str, count: int, prefix: str = "clip") -> list[str]:
    """The first `count` clip names that the hash puts in `split` (train fraction 0.8)."""
    found = (f"{prefix}{i:03d}" for i in range(10_000))
    return [n for n in found if folders.split_of(n, 0.8) == split][:count]


def _frame_folder(root: Path, name: str, colour: int | None = None, frames: int = 2) -> Path:
    """A clip stored as a folder of PNG frames; noise unless a plain `colour` is given."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name) + sum(map(ord, name)))
    for i in range(frames):
        img = (np.full((24, 24, 3), colour, np.uint8) if colour is not None
               else rng.integers(0, 256, (24, 24, 3), np.uint8))
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    return folder


def _manifest(out: Path) -> dict[str, list[str]]:
    return json.loads((out / "cache" / "manifest.json").read_text())["splits"]


def _prepare(videos: Path, out: Path, *extra: str) -> dict[str, list[str]]:
    prepare.main(["--videos", str(videos), "--out", str(out), "--size", "16", *extra])
    return _manifest(out)


def test_adding_videos_never_moves_a_clip_between_splits(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(30):
        (root / f"clip{i:03d}.mp4").touch()  # listing is all the split needs
    before = {s: {p.name for p in folders.split_videos(root, s)} for s in ("train", "test")}
    assert before["test"] and before["train"]
    for i in range(30, 40):
        (root / f"clip{i:03d}.mp4").touch()
        after = {s: {p.name for p in folders.split_videos(root, s)} for s in ("train", "test")}
        assert before["test"] <= after["test"] and before["train"] <= after["train"]
        before = after


def test_an_identity_never_straddles_splits(tmp_path):
    root = tmp_path / "vox"
    root.mkdir()
    for ident in range(12):
        for clip in range(3):
            (root / f"id{ident:05d}#yt{clip}#000001#000009.mp4").touch()
    splits = folders.assign_splits(root, 0.8)
    ids = {s: {p.name.split("#")[0] for p in splits[s]} for s in splits}
    assert ids["train"] and ids["test"] and not ids["train"] & ids["test"]
    assert all(len([p for p in splits[s] if p.name.startswith(i + "#")]) == 3
               for s in splits for i in ids[s])


def test_prepare_split_is_stable_and_corrupt_clips_are_excluded_and_counted(tmp_path, capsys):
    root = tmp_path / "flat"
    for name in _names("train", 3) + _names("test", 1):
        _frame_folder(root, name)
    first = _prepare(root, tmp_path / "out")

    # A new clip and two undecodable ones: no earlier clip changes split.
    _frame_folder(root, _names("test", 2)[1])
    for broken in _names("train", 5)[3:5]:
        (root / f"{broken}.mp4").write_bytes(b"not a video at all")
    capsys.readouterr()
    second = _prepare(root, tmp_path / "out", "--skip-corrupt")
    err = capsys.readouterr().err
    for split in ("train", "test"):
        assert set(first[split]) <= set(second[split])
    assert second["test"] == sorted(_names("test", 2))
    assert second["train"] == first["train"]  # the corrupt ones are not in it
    summary = [line for line in err.splitlines() if line.startswith("skipped")]
    assert summary == ["skipped 2 of 7 videos (2 corrupt); kept train=3 test=2"]


def test_empty_test_split_is_an_error_before_any_work(tmp_path):
    root = tmp_path / "flat"
    for name in _names("train", 3):
        _frame_folder(root, name)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        _prepare(root, out)
    message = str(info.value.code)
    assert message.startswith("error: the test split is empty") and "\n" not in message
    assert f"{root}/test" in message and "--allow-empty-test" in message
    assert not out.exists()
    assert _prepare(root, out, "--allow-empty-test") == {"train": sorted(_names("train", 3)),
                                                         "test": []}


@pytest.mark.skipif(not (REAL / "529_2.mp4").exists(), reason="real clips not available")
def test_clip_without_a_face_is_skipped_with_crop_unless_asked(tmp_path, capsys):
    root = tmp_path / "flat"
    root.mkdir()
    faces = _names("train", 1) + _names("test", 1)
    for name in faces:
        (root / f"{name}.mp4").symlink_to(REAL / "529_2.mp4")
    plain = _names("train", 2)[1]
    _frame_folder(root, plain, colour=128, frames=3)  # a grey wall: no face anywhere
    capsys.readouterr()
    kept = _prepare(root, tmp_path / "faces", "--crop", "--max-frames", "3")
    err = capsys.readouterr().err
    assert plain not in kept["train"] and sorted(kept["train"] + kept["test"]) == sorted(faces)
    assert f"skipping {root / plain}: frames 0-2: no face found" in err
    assert "--center-crop-fallback" in err
    assert "skipped 1 of 3 videos (1 without a face); kept train=1 test=1" in err

    centred = _prepare(root, tmp_path / "centred", "--crop", "--max-frames", "3",
                       "--center-crop-fallback")
    assert plain in centred["train"]


@pytest.mark.parametrize("extra, expected", [
    (("--size", "0"), "--size must be at least 16"),
    (("--quality", "200"), "--quality must be in 1..100"),
    (("--train-fraction", "1.5"), "--train-fraction must be in (0, 1]"),
    (("--max-frames", "-1"), "--max-frames must be >= 0"),
    (("--chunk-frames", "-2"), "--chunk-frames must be >= 0"),
    (("--center-crop-fallback",), "--center-crop-fallback only applies with --crop"),
])
def test_bad_arguments_are_one_line_before_work(extra, expected, tmp_path):
    _frame_folder(tmp_path / "v", "clip")
    with pytest.raises(SystemExit) as info:
        prepare.main(["--videos", str(tmp_path / "v"), "--out", str(tmp_path / "out"), *extra])
    message = str(info.value.code)
    assert message.startswith("error: ") and expected in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    _frame_folder(tmp_path / "v", "clip")
    (tmp_path / "out").write_text("mine")
    with pytest.raises(SystemExit, match="--out .* is a file"):
        prepare.main(["--videos", str(tmp_path / "v"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out").read_text() == "mine"


def test_library_steps_raise_typed_errors_and_only_main_exits(tmp_path):
    """`plan_splits` (a library step) raises `PrepareError`, an `AsrthError`, never
    `SystemExit`; `main()` turns the same problem into the one `error:` line."""
    root = tmp_path / "flat"
    for name in _names("train", 2):
        _frame_folder(root, name)
    argv = ["--videos", str(root), "--out", str(tmp_path / "out")]
    with pytest.raises(prepare.PrepareError, match="the test split is empty") as info:
        prepare.plan_splits(prepare._parse(argv))
    assert isinstance(info.value, AsrthError) and not isinstance(info.value, SystemExit)
    with pytest.raises(prepare.PrepareError, match="--size must be at least 16"):
        prepare._parse([*argv, "--size", "8"])
    with pytest.raises(SystemExit) as exited:
        prepare.main(argv)
    assert str(exited.value.code) == f"error: {info.value}"


def test_face_models_that_cannot_run_are_one_line(tmp_path, monkeypatch):
    """--track-faces where LiteRT or the face models are missing: one line, no traceback."""
    def unavailable():
        raise face_mesh.FaceMeshUnavailableError("the LiteRT interpreter is not installed "
                                                 "(test); pip install ai-edge-litert")

    monkeypatch.setattr(face_mesh, "default_landmarker", unavailable)
    root = tmp_path / "flat"
    for name in _names("train", 1) + _names("test", 1):
        _frame_folder(root, name)
    with pytest.raises(SystemExit) as exited:
        prepare.main(["--videos", str(root), "--out", str(tmp_path / "out"), "--size", "16",
                      "--track-faces"])
    assert str(exited.value.code) == ("error: face landmarks unavailable: the LiteRT "
                                      "interpreter is not installed (test); pip install "
                                      "ai-edge-litert")


def test_manifest_errors_are_typed(tmp_path):
    with pytest.raises(folders.ManifestError, match="does not exist") as info:
        folders.read_people(tmp_path / "missing.tsv")
    assert isinstance(info.value, AsrthError) and isinstance(info.value, ValueError)
