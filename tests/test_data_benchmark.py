"""`python -m data_pipelines.benchmark`: JSON out, and bad arguments in one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipelines import benchmark

REPO = Path(__file__).resolve().parents[1]


def test_small_run_reports_cpu_and_wall_throughput(tmp_path, capsys):
    out = tmp_path / "bench.json"
    report = benchmark.main(["--size", "32", "--preset", "realesrgan2", "--pairs", "2",
                             "--out", str(out)])
    (row,) = report["results"]
    assert row["size"] == 32 and row["preset"] == "realesrgan2" and row["pairs"] == 2
    assert row["batch_size"] == 4
    assert row["pairs_per_s_per_core"] > 0 and row["pairs_per_s_wall"] > 0
    assert set(row["cpu_ms_per_pair"]) == {"decode", "augment", "degrade"}
    assert "load_average_1min" in report
    assert json.loads(out.read_text()) == report
    capsys.readouterr()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--size", "8"], "--size 8 is out of range"),
    (["--sizes", "256", "-5"], "--size -5 is out of range"),
    (["--pairs", "0"], "--pairs 0 must be at least 1"),
    (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
    (["--preset", "bogus"], "invalid choice: 'bogus'"),
    (["--size", "abc"], "invalid int value: 'abc'"),
    (["--source", "tfds"], "--source tfds needs --tfds-dir"),
    (["--source", "tfds", "--tfds-dir", "/nonexistent/x"], "is not a folder"),
    (["--out", "/nonexistent/dir/b.json"], "does not exist"),
])
def test_bad_arguments_are_one_line(argv, needle, capsys):
    """argparse's own errors (a bad choice or int) exit 2 with its usage line; the value
    checks after parsing go through `fail`: `error: ...`, exit status 1."""
    with pytest.raises(SystemExit) as exc:
        benchmark.main(argv)
    if needle.startswith("invalid"):
        assert exc.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
    else:
        lines = str(exc.value.code).splitlines()  # SystemExit("error: ..."): exit status 1
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines


def test_tfds_dir_without_a_prepared_dataset_is_one_line(tmp_path, capsys):
    """The dataset's own error (a typed library error) becomes the main's one line."""
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--source", "tfds", "--tfds-dir", str(tmp_path), "--pairs", "1"])
    message = str(exc.value.code)
    assert message.startswith("error: no prepared dataset") and "\n" not in message
    assert "data_pipelines.prepare" in message


def test_existing_out_is_not_overwritten_without_asking(tmp_path, capsys):
    out = tmp_path / "mine.json"
    out.write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--size", "32", "--pairs", "1", "--out", str(out)])
    assert out.read_text() == "keep me"
    assert "--overwrite" in str(exc.value.code)


def test_cli_process_exits_with_one_line():
    """A value refused after parsing: `fail`, exit 1; a flag argparse refuses: exit 2."""
    proc = subprocess.run([sys.executable, "-m", "data_pipelines.benchmark", "--pairs", "-1"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: --pairs -1 must be at least 1"]
    proc = subprocess.run([sys.executable, "-m", "data_pipelines.benchmark", "--pairs", "x"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: argument --pairs: invalid int value: 'x' (see --help)"]
