"""Bad arguments of evaluate and benchmark: one line on stderr, non-zero exit, before any
model is built or compiled (both are replaced here by functions that fail the test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from train_helpers import write_misspelt_config

from asrth_jax import akd, benchmark, cli_args, evaluate, model_loading

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "tiny_train_config.py")


def _never(*args, **kwargs):
    raise AssertionError("reached model building: the argument check came too late")


@pytest.fixture(autouse=True)
def no_models(monkeypatch):
    monkeypatch.setattr(model_loading, "load_generator_side", _never)
    monkeypatch.setattr(evaluate, "open_eval_data", _never)
    monkeypatch.setattr(benchmark, "run", _never)


def one_line_error(capsys, main, argv) -> str:
    """Runs `main(argv)`, which must exit non-zero with one line; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    if isinstance(code, str):  # SystemExit("error: ...") prints the text, exit status 1
        message = code
    else:
        assert code not in (0, None)
        message = capsys.readouterr().err
    lines = message.strip().splitlines()
    assert len(lines) == 1, message
    assert lines[0].startswith("error:") and "Traceback" not in message
    return lines[0]


@pytest.fixture
def eval_paths(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    return {"tmp": tmp_path, "ckpt": str(ckpt), "data": str(data)}


def _eval_argv(p, out, *extra, data=None, ckpt=None):
    return ["--checkpoint", ckpt or p["ckpt"], "--config", TINY, "--data", data or p["data"],
            "--out", str(out), "--quiet", *extra]


def test_evaluate_out_is_a_file_even_with_overwrite(capsys, eval_paths):
    """It used to fail with a traceback after the whole evaluation (mkdir on a file)."""
    out = eval_paths["tmp"] / "taken.txt"
    out.write_text("mine")
    line = one_line_error(capsys, evaluate.main, _eval_argv(eval_paths, out, "--overwrite"))
    assert "is a file, not a directory" in line
    assert out.read_text() == "mine"


def test_evaluate_out_under_a_file(capsys, eval_paths):
    parent = eval_paths["tmp"] / "file"
    parent.write_text("x")
    line = one_line_error(capsys, evaluate.main, _eval_argv(eval_paths, parent / "sub" / "out"))
    assert "is a file, not a directory" in line and str(parent) in line


def test_evaluate_output_name_taken_by_a_directory(capsys, eval_paths):
    out = eval_paths["tmp"] / "out"
    (out / "summary.json").mkdir(parents=True)
    line = one_line_error(capsys, evaluate.main, _eval_argv(eval_paths, out, "--overwrite"))
    assert "summary.json is a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_evaluate_out_not_writable(capsys, eval_paths):
    locked = eval_paths["tmp"] / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = one_line_error(capsys, evaluate.main, _eval_argv(eval_paths, locked / "out"))
    finally:
        locked.chmod(0o700)
    assert "not writable" in line


@pytest.mark.parametrize("flag,value,needle", [
    ("--max-videos", "-1", "negative"),
    ("--max-frames", "-3", "negative"),
    ("--batch-size", "two", "not an integer"),
    ("--contact-cases", "-1", "negative"),
    ("--akd", "maybe", "invalid choice"),
])
def test_evaluate_bad_numbers_and_choices(capsys, eval_paths, flag, value, needle):
    line = one_line_error(capsys, evaluate.main,
                          _eval_argv(eval_paths, eval_paths["tmp"] / "o", flag, value))
    assert flag in line and needle in line


def test_evaluate_missing_data_and_checkpoint(capsys, eval_paths):
    out = eval_paths["tmp"] / "o"
    line = one_line_error(capsys, evaluate.main,
                          _eval_argv(eval_paths, out, data=str(eval_paths["tmp"] / "nope")))
    assert "--data" in line and "is not a directory" in line
    line = one_line_error(capsys, evaluate.main,
                          _eval_argv(eval_paths, out, ckpt=str(eval_paths["tmp"] / "nockpt")))
    assert "--checkpoint" in line
    assert not out.exists()  # nothing written for a refused run


def test_evaluate_akd_require_refuses_without_detector(capsys, eval_paths, monkeypatch):
    monkeypatch.setattr(akd, "status", lambda: "AKD unavailable: no detector here")
    line = one_line_error(capsys, evaluate.main,
                          _eval_argv(eval_paths, eval_paths["tmp"] / "o", "--akd", "require"))
    assert "AKD unavailable" in line and "--akd auto" in line


def test_benchmark_refuses_an_existing_out(capsys, tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    out.write_text("earlier results")
    line = one_line_error(capsys, benchmark.main, ["--config", TINY, "--out", str(out)])
    assert "exists" in line and "--overwrite" in line
    assert out.read_text() == "earlier results"
    monkeypatch.setattr(benchmark, "run", lambda *a, **k: {"batch": 2, "dtype": "float32"})
    assert benchmark.main(["--config", TINY, "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text()) == {"batch": 2, "dtype": "float32"}


@pytest.mark.parametrize("argv,needle", [
    (["--steps", "0"], "not positive"),
    (["--batch", "-2"], "negative"),
    (["--batch", "x"], "not an integer"),
    (["--inference-only", "--skip-inference"], "nothing to run"),
    (["--inference-only", "--compile-only"], "drop --inference-only"),
    (["--config", "missing.py"], "does not exist"),
])
def test_benchmark_bad_arguments(capsys, argv, needle):
    line = one_line_error(capsys, benchmark.main, ["--config", TINY, *argv])
    assert needle in line


def test_benchmark_output_paths(capsys, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    line = one_line_error(capsys, benchmark.main, ["--config", TINY, "--out", str(tmp_path)])
    assert "is a directory" in line
    line = one_line_error(capsys, benchmark.main,
                          ["--config", TINY, "--out", str(a_file / "bench.json")])
    assert "is a file, not a directory" in line
    line = one_line_error(capsys, benchmark.main, ["--config", TINY, "--profile", str(a_file)])
    assert "--profile" in line and "is a file" in line


def test_check_output_file_accepts_new_and_overwritable(tmp_path):
    new = tmp_path / "deep" / "er" / "x.json"
    assert cli_args.check_output_file(new, "--out", overwrite=False) == new
    new.parent.mkdir(parents=True)
    new.write_text("x")
    assert cli_args.check_output_file(new, "--out", overwrite=True) == new
    with pytest.raises(cli_args.OutputPathError):
        cli_args.check_output_file(new, "--out", overwrite=False)


def test_a_misspelt_config_key_is_one_line_from_every_cli(capsys, tmp_path, eval_paths):
    """`config_lib.load_config_file` raises a typed ConfigError; each `main()` (not the
    library) makes it the one-line exit."""
    from asrth_jax import convert
    from asrth_jax.models import summary

    bad = write_misspelt_config(tmp_path)
    runs = {
        "evaluate": (evaluate.main, [*_eval_argv(eval_paths, tmp_path / "o")[:2], "--config",
                                     str(bad), *_eval_argv(eval_paths, tmp_path / "o")[4:]]),
        "benchmark": (benchmark.main, ["--config", str(bad)]),
        "convert": (convert.main, ["--torch-checkpoint", str(tmp_path / "r.pth"), "--config",
                                   str(bad), "--out", str(tmp_path / "c")]),
        "summary": (summary.main, ["--config", str(bad)]),
    }
    for name, (main, argv) in runs.items():
        line = one_line_error(capsys, main, argv)
        assert "unknown key" in line and "nun_steps" in line, (name, line)


def test_library_errors_share_one_typed_root():
    """Every one-line error of the library is an `errors.AsrthError` (so a `main()` can
    catch them as one family) and keeps the builtin base its callers catch."""
    from asrth_jax import (
        animate,
        checkpoints,
        config_lib,
        convert,
        errors,
        media,
        torch_files,
        workdir,
    )

    value_errors = (config_lib.ConfigError, convert.ConversionError, convert.OutputError,
                    torch_files.TorchFileError, media.MediaError, cli_args.OutputPathError,
                    model_loading.ModelLoadError, animate.AnimateError, evaluate.EvaluateError)
    others = (checkpoints.DamagedCheckpointError, checkpoints.ModelMismatchError,
              checkpoints.ResumeError, checkpoints.SaveError, workdir.WorkdirError)
    for cls in value_errors + others:
        assert issubclass(cls, errors.AsrthError), cls
    assert all(issubclass(cls, ValueError) for cls in value_errors)
    # Data-side errors too: library code never raises SystemExit, only mains exit. The
    # root lives in data_pipelines (which never imports asrth_jax) and is re-exported.
    from asrth_jax import memory_fit
    from data_pipelines import errors as data_errors
    from data_pipelines import face_mesh, folders, prepare

    assert errors.AsrthError is data_errors.AsrthError and cli_args.fail is data_errors.fail
    for cls in (data_errors.DatasetNotFoundError, folders.ManifestError, prepare.PrepareError,
                face_mesh.FaceMeshUnavailableError, memory_fit.StepTooLarge):
        assert issubclass(cls, errors.AsrthError) and not issubclass(cls, SystemExit), cls
    assert issubclass(data_errors.DatasetNotFoundError, FileNotFoundError)
    assert issubclass(folders.ManifestError, ValueError)
    assert issubclass(face_mesh.FaceMeshUnavailableError, RuntimeError)
