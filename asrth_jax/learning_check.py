"""Did a training run learn to follow the driver? Three bars on its last evaluation.

Reads the last held-out evaluation a run logged to `WORKDIR/metrics.jsonl` (the periodic
evaluation on synthetic data, whose renderer knows the true landmarks and head masks)
and checks the three signs that the model moves the source like the driver, rather
than only reconstructing it:

- motion: the landmark transfer error is at most 0.7x the identity-motion error (the
  deformation carries the source's landmarks most of the way to the driver's pose);
- head: on the moving region (both frames' head masks) the model beats copying the
  source;
- frame: on the whole frame the model is 10%+ below its own no-motion rendering (the
  motion is worth more than the blur it costs).

`python -m asrth_jax.learning_check runs/demo` prints the three figures and exits 1 when
a bar is missed, so CI's run of the demo shows (and enforces) them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asrth_jax import cli_args, errors
from asrth_jax.reconstruction_eval import metric_key

MOTION_RATIO = 0.7  # landmark transfer error / identity-motion error, at most
FRAME_GAIN = 0.10  # whole-frame L1 below the no-motion rendering's, at least

# The scores the bars read, by the evaluator's one naming (`metric_key`).
_KEYS = tuple(metric_key(reference, metric) for reference, metric in (
    ("model", "landmark_error"), ("copy_source", "landmark_error"), ("model", "moving_l1"),
    ("copy_source", "moving_l1"), ("model", "l1"), ("no_motion", "l1")))


class LearningCheckError(errors.AsrthError, ValueError):
    """A run directory whose log holds no usable evaluation (one-line message)."""


@dataclass(frozen=True)
class Bar:
    name: str
    met: bool
    text: str  # the figures, in words


def last_evaluation(workdir: str | Path) -> tuple[int, dict[str, float]]:
    """(step, {key: value}) of the last logged evaluation with the motion metrics."""
    log = Path(workdir) / "metrics.jsonl"
    if not log.is_file():
        raise LearningCheckError(f"{log} does not exist; give the --workdir of a training "
                                 "run (python -m asrth_jax.train --workdir ...)")
    found = None
    for number, line in enumerate(log.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise LearningCheckError(f"{log} line {number} is not JSON; the log is damaged, "
                                     "rerun the training into a fresh workdir") from None
        if isinstance(row, dict) and all(f"eval/{k}" in row for k in _KEYS):
            fields = {"step": row.get("step", -1), **{k: row[f"eval/{k}"] for k in _KEYS}}
            wrong = next((k for k, v in fields.items() if not _is_number(v)
                          or (k == "step" and not isinstance(v, int))), None)
            if wrong is not None:
                raise LearningCheckError(
                    f"{log} line {number}: {'step' if wrong == 'step' else 'eval/' + wrong} "
                    f"is {fields[wrong]!r}, not a number; the log is damaged, rerun the "
                    "training into a fresh workdir")
            found = int(fields.pop("step")), {k: float(v) for k, v in fields.items()}
    if found is None:
        raise LearningCheckError(f"{log} has no evaluation with the motion metrics; they are "
                                 "logged on synthetic data (config.data.kind='synthetic') "
                                 "every config.eval.every_steps")
    return found


def _is_number(value: object) -> bool:
    # JSON numbers only: a bool is an int to Python, and a string such as "0.5" or
    # "nan" is not what the evaluator writes.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bars(scores: dict[str, float]) -> list[Bar]:
    """The three bars over one evaluation's means (keys without the `eval/` prefix)."""
    lte, identity, moving, copy_moving, whole, still = (scores[k] for k in _KEYS)
    # A run whose heads never move (or whose no-motion rendering is perfect) scores NaN,
    # which meets no bar.
    ratio = lte / identity if identity > 0 else math.nan
    gain = 1.0 - whole / still if still > 0 else math.nan
    return [
        Bar("motion", ratio <= MOTION_RATIO,
            f"landmark transfer error {lte:.3f} px = {ratio:.2f}x the "
            f"identity-motion error {identity:.3f} px (at most {MOTION_RATIO}x)"),
        Bar("head", moving < copy_moving,
            f"moving-region L1 {moving:.4f} vs copy-source {copy_moving:.4f} (below it)"),
        Bar("frame", gain >= FRAME_GAIN,
            f"whole-frame L1 {whole:.4f} vs no-motion {still:.4f}: {gain:.1%} below "
            f"(at least {FRAME_GAIN:.0%})"),
    ]


def main(argv: Sequence[str] | None = None) -> list[Bar]:
    parser = cli_args.OneLineParser(
        prog="python -m asrth_jax.learning_check",
        description="Check that a run's last held-out evaluation shows learned motion.")
    parser.add_argument("workdir", help="the training run's --workdir")
    args = parser.parse_args(argv)
    try:
        step, scores = last_evaluation(args.workdir)
    except LearningCheckError as err:
        raise cli_args.fail(str(err)) from None
    results = bars(scores)
    print(f"last evaluation: step {step} ({args.workdir})")
    for bar in results:
        print(f"  {'met' if bar.met else 'MISSED'}  {bar.name}: {bar.text}")
    missed = [bar.name for bar in results if not bar.met]
    if missed:
        raise cli_args.fail(f"the run misses the learning bar(s) {', '.join(missed)}; "
                            "train longer or see README (a)")
    return results


if __name__ == "__main__":
    main()
