"""The shipped demo checkpoint (`pretrained/demo_64`, README (a)'s long run) works on a
fresh clone: it loads with `configs/demo.py` and, on the held-out synthetic identities,
follows the driver and beats copying the source on the whole frame."""

import json
from pathlib import Path

from asrth_jax import evaluate, learning_check
from asrth_jax.reconstruction_eval import metric_key

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_demo_checkpoint_beats_copy_source_on_held_out_heads(tmp_path):
    out = tmp_path / "eval"
    evaluate.main(["--checkpoint", str(ROOT / "pretrained" / "demo_64"),
                   "--config", str(ROOT / "configs" / "demo.py"), "--data", "synthetic",
                   "--out", str(out), "--max-videos", "8", "--max-frames", "8",
                   "--akd", "off", "--quiet"])
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    whole = metrics["l1"]
    assert whole["model"] < whole["copy_source"]  # README: 0.0586 against 0.0643
    scores = {metric_key(who, name): metrics[name][who]
              for name in ("landmark_error", "moving_l1", "l1")
              for who in ("model", "copy_source", "no_motion")}
    assert all(bar.met for bar in learning_check.bars(scores))
