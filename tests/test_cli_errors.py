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


# --- One way out: every main() exits through `fail`, library code never exits ----------

import ast  # noqa: E402 - this section's own tools

PACKAGES = ("asrth_jax", "data_pipelines")


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` (the one place a module may call `sys.exit(main())`)."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name) and test.left.id == "__name__")


def _stderr_prints(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "print" and any(
                kw.arg == "file" and ast.unparse(kw.value) == "sys.stderr"
                for kw in node.keywords))


def _starts_with_error(node: ast.AST) -> bool:
    """A literal or f-string whose text begins `error:` (a hand-made error line)."""
    if isinstance(node, ast.JoinedStr) and node.values:
        node = node.values[0]
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.startswith("error:"))


def exit_problems(source: str, name: str) -> list[str]:
    """Each way `source` leaves the process other than `raise fail(message)`: a
    `SystemExit(...)`, `sys.exit(...)`/`exit(...)`, an argparse `p.error(...)`, a
    `print(..., file=sys.stderr)` of an `error:` line, or a `main()` returning a
    non-zero status. The `if __name__ == "__main__"` block is exempt."""
    problems = []
    tree = ast.parse(source)
    guarded = {id(n) for top in tree.body if _is_main_guard(top) for n in ast.walk(top)}
    mains = {id(n) for top in tree.body
             if isinstance(top, ast.FunctionDef) and top.name == "main"
             for n in ast.walk(top)}
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("SystemExit", "sys.exit", "exit", "quit", "os._exit"):
                problems.append(f"{where} {func}(...)")
            elif (isinstance(node.func, ast.Attribute) and node.func.attr == "error"
                  and func.split(".")[0] not in ("logging", "logger", "log")):
                problems.append(f"{where} {func}(...) (argparse's exit after parsing)")
            elif _stderr_prints(node) and node.args and _starts_with_error(node.args[0]):
                problems.append(f"{where} print('error: ...', file=sys.stderr)")
        elif (isinstance(node, ast.Return) and id(node) in mains
              and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)
              and node.value.value != 0):
            problems.append(f"{where} main() returns {node.value.value}")
    return sorted(problems, key=lambda p: int(p.split(" ", 1)[0].rsplit(":", 1)[1]))


def _modules():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative != "data_pipelines/errors.py":  # `fail` itself builds the SystemExit
                yield relative, path.read_text()


def test_every_main_exits_only_through_fail_and_no_library_code_exits():
    mains = [name for name, source in _modules() if "\ndef main(" in source]
    assert len(mains) >= 13, mains  # train, animate, app, evaluate, convert, benchmark(s), ...
    problems = [p for name, source in _modules() for p in exit_problems(source, name)]
    assert problems == []


def test_the_exit_scan_finds_each_old_way_out():
    """The scan above would fail on each style this package used before (issue 29)."""
    old = '''
import sys

def helper(p, args):
    if args.x:
        p.error("--x is bad")

def main(argv=None):
    if argv:
        raise SystemExit(f"error: {argv}")
    try:
        run()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not ok:
        print("error: no summary", file=sys.stderr)
        return 2
    return 0

if __name__ == "__main__":
    sys.exit(main())
'''
    found = exit_problems(old, "old.py")
    assert [p.split(" ", 1)[1] for p in found] == [
        "p.error(...) (argparse's exit after parsing)", "SystemExit(...)",
        "print('error: ...', file=sys.stderr)", "sys.exit(...)",
        "print('error: ...', file=sys.stderr)", "main() returns 2"], found
    fixed = "from m import fail\n\ndef main(argv=None):\n    raise fail('bad')\n"
    assert exit_problems(fixed, "new.py") == []


def test_fail_is_one_error_line_with_status_1_or_the_status_asked(capsys):
    exit_1 = cli_args.fail("first line\nsecond line")
    assert isinstance(exit_1, SystemExit) and exit_1.code == "error: first line"
    assert cli_args.fail("error: already prefixed").code == "error: already prefixed"
    assert cli_args.fail("").code == "error: failed"
    capsys.readouterr()
    exit_2 = cli_args.fail("bad flag", status=2)
    assert exit_2.code == 2 and capsys.readouterr().err == "error: bad flag\n"


def test_the_training_and_data_errors_are_typed():
    """A user-fixable problem of training, its config or its data is an AsrthError (the
    train main's one-line exit); the builtin base stays for callers that catch it."""
    from asrth_jax import benchmark_suite, errors, schedule, sharding, teachers, train
    from asrth_jax.models import generator
    from data_pipelines import (
        degradation,
        degradation_config,
        folders,
        pipeline,
        sources,
        video_io,
    )
    from data_pipelines import errors as data_errors

    assert issubclass(train.StopTraining, errors.AsrthError)
    assert errors.ConfigError is data_errors.ConfigError
    for cls in (errors.ConfigError, degradation.DegradationConfigError, data_errors.DataError,
                benchmark.BenchmarkError):
        assert issubclass(cls, errors.AsrthError) and issubclass(cls, ValueError), cls
    from asrth_jax import checkpoints, profile_summary

    assert issubclass(benchmark_suite.PreflightError, errors.AsrthError)
    for cls in (checkpoints.CheckpointNotFoundError, profile_summary.NoTraceError):
        assert issubclass(cls, errors.AsrthError) and issubclass(cls, FileNotFoundError), cls
    import ml_collections

    config = ml_collections.ConfigDict({"num_epochs": 0, "num_steps": 0})
    checks = [
        lambda: schedule.check_training_length(ml_collections.ConfigDict(
            {"train": config, "optim": {"decay_epochs": (), "decay_milestones": ()}})),
        lambda: schedule.steps_per_epoch(3, 4),
        lambda: sharding.make_mesh(ml_collections.ConfigDict({"data": 3, "fsdp": 1})),
        lambda: sharding.check_deterministic_reductions(ml_collections.ConfigDict(
            {"deterministic_reductions": True, "shard_params": True})),
        lambda: generator.check_num_down_blocks(0),
        lambda: teachers.check_headpose_teacher(
            ml_collections.ConfigDict({"headpose_teacher": "oracle"}), "vox"),
        lambda: degradation_config.default_degradation_config("no_such_preset"),
        lambda: pipeline.make_pair_source(ml_collections.ConfigDict({"kind": "nope"}),
                                          "train", 0),
        lambda: video_io.decode_frame(b"not an image"),
        lambda: folders.split_of("clip", train_fraction=1.5),
    ]
    for check in checks:
        with pytest.raises(errors.AsrthError):
            check()
    with pytest.raises(data_errors.DataError, match="empty video collection"):
        sources.PairSource([], seed=0)


def test_convert_lists_every_mismatch_then_ends_with_its_one_error_line(
        tmp_path, monkeypatch, capsys):
    """Convert's many-problem report goes through `fail` too: the problems first, the
    `error:` line (exit status 1) last."""
    from asrth_jax import convert
    from asrth_jax.models import adasr

    def mismatched(*args):
        raise convert.ConversionError("generator.a: shape (3,) vs (4,)\ngenerator.b: missing")

    monkeypatch.setattr(convert, "load_torch_file", lambda path: {"generator": {}})
    monkeypatch.setattr(convert, "check_released_layout", lambda checkpoint: None)
    monkeypatch.setattr(adasr, "abstract_generator", lambda model: None)
    monkeypatch.setattr(adasr, "build_discriminator", lambda model: None)
    monkeypatch.setattr(convert, "convert_released_checkpoint", mismatched)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        convert.main(["--torch-checkpoint", "r.pth", "--config", TINY,
                      "--out", str(tmp_path / "c")])
    assert exc.value.code == (f"error: r.pth does not match {TINY}: 2 problems (above); "
                              "pass the config the checkpoint was trained with")
    assert capsys.readouterr().err.splitlines() == ["  generator.a: shape (3,) vs (4,)",
                                                    "  generator.b: missing"]
    assert not (tmp_path / "c").exists()


def test_the_model_and_weight_file_errors_are_typed(tmp_path):
    """An image size the model cannot take, a weights file that cannot be used and weights
    that are not there are AsrthErrors (so `summary`, `benchmark` and training end in their
    one line) and keep the builtin their callers catch."""
    import numpy as np

    from asrth_jax import errors
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.models import adasr, hopenet, vgg

    model = load_config_file(TINY).model
    with pytest.raises(errors.ConfigError, match="not a multiple"):
        adasr.validate_image_shape(model, (1, 33, 33, model.common.image_channel))
    bad = tmp_path / "weights.npz"
    bad.write_text("not a zip")
    with pytest.raises(vgg.WeightsError, match="cannot read weights"):
        vgg.load_flat_npz(bad)
    np.savez(tmp_path / "empty.npz", nothing=np.zeros(1))
    for load in (vgg.load_vgg19_npz, hopenet.load_hopenet_npz):
        with pytest.raises(vgg.WeightsError):
            load(tmp_path / "empty.npz")
    with pytest.raises(vgg.WeightsNotFoundError, match="not found"):
        vgg.make_perceptual_network("vgg19", str(tmp_path / "missing.npz"))
    with pytest.raises(errors.ConfigError, match="unknown perceptual network"):
        vgg.make_perceptual_network("alexnet")
    assert issubclass(vgg.WeightsError, errors.AsrthError) and issubclass(vgg.WeightsError,
                                                                         ValueError)
    assert issubclass(vgg.WeightsNotFoundError, errors.AsrthError) and issubclass(
        vgg.WeightsNotFoundError, FileNotFoundError)
