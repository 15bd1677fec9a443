"""The reconstruction evaluator without a model: its batches (padded, masked), its
reduction (real frames only) and its score names (tiny synthetic test split)."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import TINY

from asrth_jax import metrics, motion_metrics, reconstruction_eval


@pytest.fixture(scope="module")
def evaluator():
    from asrth_jax import train
    from asrth_jax.config_lib import load_config_file

    config = load_config_file(TINY)
    return reconstruction_eval.Evaluator(train.eval_data_config(config), batch_size=3)


def test_batches_are_padded_masked_and_carry_the_ground_truth(evaluator):
    sizes = [evaluator.ds[i]["source"].shape[0] for i in range(len(evaluator.ds))]
    assert sizes[-1] < 3  # the last batch is short: padded below
    batches = list(evaluator.batches())
    assert [int(mask.sum()) for _, mask in batches] == sizes
    for batch, _ in batches:
        assert all(v.shape[0] == 3 for v in batch.values())
        assert set(motion_metrics.TRUTH_KEYS) <= set(batch)
    last, mask = batches[-1]
    n = int(mask.sum())
    np.testing.assert_array_equal(last["driving"][n:], np.repeat(last["driving"][n - 1:n],
                                                                 3 - n, 0))
    # past this host's end (another host has more): all padding, first batch's last row
    beyond, mask = evaluator.batch(len(evaluator.ds))
    assert mask.sum() == 0
    first_last = evaluator.ds[0]["driving"][-1]
    assert all(np.array_equal(row, first_last) for row in beyond["driving"])


def test_run_averages_the_real_frames_only(evaluator):
    frames = np.concatenate([evaluator.ds[i]["frame_index"][:, 1]
                             for i in range(len(evaluator.ds))])

    def step(batch, mask):  # a step that "scores" each frame by its index t
        return {"count": mask.sum(), "t": (batch["frame_index"][:, 1] * mask).sum()}

    assert evaluator.run(step) == {"t": pytest.approx(frames.mean())}


def test_scores_are_named_per_reference_and_capped(evaluator):
    batch, mask = evaluator.batch(0)
    source = batch["source"]
    field = np.zeros(source.shape[:1] + (2, 4, 4, 3), np.float32)
    outputs = {reconstruction_eval.PREDICTION: batch["driving"],  # a perfect model
               reconstruction_eval.NO_MOTION: source,
               reconstruction_eval.DEFORMATION: field,
               reconstruction_eval.NO_MOTION_DEFORMATION: field}
    scores = reconstruction_eval.frame_scores(outputs, batch)
    names = ("l1", "psnr", "ssim") + motion_metrics.MOTION_METRICS
    assert set(scores) == {f"{ref}_{m}" for ref in metrics.REFERENCES for m in names}
    np.testing.assert_allclose(scores["model_psnr"], reconstruction_eval.PSNR_CAP_DB,
                               rtol=1e-6)
    np.testing.assert_allclose(scores["copy_source_l1"], scores["no_motion_l1"])
    sums = reconstruction_eval.masked_sums(scores, mask)
    assert float(sums["count"]) == mask.sum()
    np.testing.assert_allclose(sums["model_psnr"], 100.0 * mask.sum(), rtol=1e-6)
