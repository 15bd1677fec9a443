"""The train loop's periodic evaluation on synthetic data: motion metrics as scalars and
the landmark-transfer column of the evaluation image grid (tiny config, one device)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import TINY


@pytest.fixture(scope="module")
def trained():
    import jax

    from asrth_jax import sharding
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.train_step import TrainSetup

    config = load_config_file(TINY)
    with config.unlocked():
        config.mesh.data = 1  # one device whatever the host has
    trainer = TrainSetup(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    return config, trainer, trainer.init_state(config.seed)


def test_periodic_eval_reports_motion_metrics(trained):
    from asrth_jax import train

    config, trainer, state = trained
    scalars = train.evaluate(trainer, state, train.make_evaluator(config))
    for name in ("model", "copy_source", "no_motion"):
        for metric in ("landmark_error", "moving_l1", "l1"):
            assert np.isfinite(scalars[f"eval/{name}_{metric}"]), (name, metric)
    # the heads move between the evaluation frames; a model driven by its own keypoints
    # (no-motion) predicts the identity field and scores exactly the identity error
    assert scalars["eval/copy_source_landmark_error"] > 0.3
    np.testing.assert_allclose(scalars["eval/no_motion_landmark_error"],
                               scalars["eval/copy_source_landmark_error"], atol=1e-3)
    # copy-source differs from the driver only where a head is
    assert scalars["eval/copy_source_moving_l1"] > 1.5 * scalars["eval/copy_source_l1"]


def test_the_cli_protocol_equals_the_periodic_evaluation(trained):
    """One evaluator: run with a predict function on `inference.Animator` (what
    `python -m asrth_jax.evaluate` does), it gives the periodic evaluation's numbers
    under the same names."""
    from asrth_jax import evaluate, inference, reconstruction_eval, train, train_step

    config, trainer, state = trained
    periodic = train.evaluate(trainer, state, train.make_evaluator(config))
    evaluator = reconstruction_eval.Evaluator(train.eval_data_config(config),
                                              batch_size=config.train.global_batch_size)
    gen, _ = train_step.models(trainer.defs, state)
    animator = inference.make_animator(gen, evaluator.batch_size)
    cli = evaluator.run(reconstruction_eval.host_step(
        evaluate.animator_predict(animator, with_deformation=True)))
    assert sorted(f"eval/{key}" for key in cli) == sorted(periodic)
    for key, value in cli.items():
        np.testing.assert_allclose(value, periodic[f"eval/{key}"], rtol=1e-4, atol=1e-5,
                                   err_msg=key)


def test_eval_grid_has_the_landmark_transfer_column(trained):
    from asrth_jax import train

    config, trainer, state = trained
    grid = train.eval_image_grid(trainer, state, train.make_evaluator(config))
    size = config.image_size
    assert grid.shape == (4 * size, 7 * size, 3)
    drawing = grid[:size, 6 * size:]
    green = (drawing[..., 1] > 0.8) & (drawing[..., 0] < 0.4)  # true source landmarks
    red = (drawing[..., 0] > 0.8) & (drawing[..., 1] < 0.4)  # rings: where the model sends
    assert green.any() and red.any()
    # batches without true landmarks (training pairs) keep 6 columns
    batch = {k: np.zeros((2, size, size, 3), np.float32) for k in train.BATCH_KEYS}
    visuals = {"prediction": batch["source"], "occlusion_map": np.zeros((2, 8, 8, 1)),
               "kp_source": np.zeros((2, 4, 3)), "kp_driving": np.zeros((2, 4, 3)),
               "deformation": np.zeros((2, 4, 8, 8, 3))}
    assert train.make_image_grid(batch, visuals).shape == (2 * size, 6 * size, 3)


@pytest.mark.slow
def test_a_run_builds_its_evaluator_once(tmp_path, monkeypatch):
    """Two periodic evaluations (scores and image grid each) share one evaluator: the
    test split is opened once per run, its decoded videos kept."""
    from asrth_jax import reconstruction_eval, train
    from asrth_jax.config_lib import load_config_file

    built = []
    original = reconstruction_eval.Evaluator.__init__

    def counting(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(reconstruction_eval.Evaluator, "__init__", counting)
    config = load_config_file(TINY)
    with config.unlocked():
        config.mesh.data = 1
        config.train.num_steps = 2
        config.eval.every_steps = 1
        config.log.images_every_steps = 100
    workdir = tmp_path / "run"
    train.train_and_evaluate(config, str(workdir))
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval/model_l1" in row for row in rows) == 2
    assert len(built) == 1
