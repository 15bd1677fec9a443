"""The learning check reads a run's last evaluation and holds it to the three bars."""

import json

import pytest

from asrth_jax import learning_check


def _eval_row(step, *, lte=2.0, moving=0.10, whole=0.060):
    values = {"model_landmark_error": lte, "copy_source_landmark_error": 5.0,
              "model_moving_l1": moving, "copy_source_moving_l1": 0.11,
              "model_l1": whole, "no_motion_l1": 0.070, "model_psnr": 20.0}
    return {"step": step, **{f"eval/{k}": v for k, v in values.items()}}


def _write(workdir, rows):
    workdir.mkdir(exist_ok=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return workdir


def test_the_last_evaluation_is_checked(tmp_path, capsys):
    run = _write(tmp_path / "run", [_eval_row(80, lte=4.0, whole=0.069),
                                    {"step": 90, "train/loss": 1.0}, _eval_row(160)])
    results = learning_check.main([str(run)])
    assert [b.met for b in results] == [True, True, True]
    out = capsys.readouterr().out
    assert "step 160" in out and "0.40x" in out and "14.3% below" in out


@pytest.mark.parametrize("change, bar", [
    ({"lte": 3.6}, "motion"),  # 0.72x the identity-motion error
    ({"moving": 0.11}, "head"),  # equal to copy-source is not below it
    ({"whole": 0.0631}, "frame"),  # 9.9% below no-motion
])
def test_each_missed_bar_fails_by_name(tmp_path, capsys, change, bar):
    run = _write(tmp_path / "run", [_eval_row(80), _eval_row(160, **change)])
    with pytest.raises(SystemExit) as exit_info:
        learning_check.main([str(run)])
    assert str(exit_info.value).startswith(f"error: the run misses the learning bar(s) {bar};")
    assert f"MISSED  {bar}" in capsys.readouterr().out


def test_still_heads_meet_no_bar():
    scores = {k.removeprefix("eval/"): v for k, v in _eval_row(10).items() if k != "step"}
    scores.update(copy_source_landmark_error=0.0, no_motion_l1=0.0)
    results = {bar.name: bar.met for bar in learning_check.bars(scores)}
    assert results == {"motion": False, "head": True, "frame": False}


def test_unusable_logs_get_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="metrics.jsonl does not exist; give the --workdir"):
        learning_check.main([str(tmp_path / "nothing")])
    run = _write(tmp_path / "scalars", [{"step": 10, "train/loss": 1.0}])
    with pytest.raises(SystemExit, match="has no evaluation with the motion metrics"):
        learning_check.main([str(run)])
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "eval/mod')
    with pytest.raises(SystemExit, match="line 2 is not JSON"):
        learning_check.main([str(run)])


@pytest.mark.parametrize("field, value", [
    ("eval/model_l1", "0.05"), ("eval/model_landmark_error", None),
    ("eval/no_motion_l1", [0.07]), ("eval/model_moving_l1", True), ("step", "160"),
    ("step", 1e400)])
def test_wrongly_typed_values_are_one_line(tmp_path, field, value):
    """Issue 28: a log row whose value is not a number (hand-edited, written by other
    code) is one line naming the line and the key, not a traceback from float()."""
    row = _eval_row(160)
    row[field] = value
    run = _write(tmp_path / "run", [_eval_row(80), row])
    with pytest.raises(SystemExit) as info:
        learning_check.main([str(run)])
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert f"line 2: {field} is" in message and "not a number" in message
