"""The reconstruction evaluator: one protocol for training's periodic evaluation and
`python -m asrth_jax.evaluate` (big_vision's evaluator pattern).

The protocol (FOMM): each held-out video's frame 0 is the source and every frame t
(`max_frames` of them, evenly spaced, 0 included) is driven and compared with the real
frame t. Three renderings are scored per frame (`metrics.REFERENCES`): the model's,
copy-source (the clean frame 0 itself, the floor to beat) and no-motion (the model
driven by its own source keypoints). Keys are `{reference}_{metric}` (`metric_key`):
`model_l1`, `copy_source_psnr`, `no_motion_ssim`, and on synthetic data
`model_landmark_error`, `copy_source_moving_l1`, ...

This module owns
- the data: `Evaluator` opens this host's share of the test split; `Evaluator.batches`
  yields fixed-size host batches padded by repeating a row, with a mask of the real
  rows, the same number on every host (a step may hold collectives);
- the scores and their names (`frame_scores`, traceable) and the reduction: masked
  sums per batch (`masked_sums`), then sum / count over batches (`Evaluator.run`);
- `predict`: the model outputs a generator module gives for a batch.

A driver hands `Evaluator.run` a step, (host batch, mask) -> masked sums. Training:
`predict`, `frame_scores` and `masked_sums` in one program jitted with the state's
shardings (`train_step.eval_step`). The CLI: `host_step` over a predict function built
on `inference.Animator`, with an observer for its per-video table and contact sheet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from asrth_jax import metrics, motion_metrics

Batch = dict[str, Any]
Outputs = dict[str, Any]
# A step: (host batch, mask of its real rows) -> masked sums of every key, and "count".
Step = Callable[[Batch, np.ndarray], dict[str, Any]]

IMAGE_KEYS = ("source", "source_lq", "driving")
INDEX_KEYS = ("video_index", "frame_index")
# `predict`'s outputs; the deformations are needed for the motion metrics only.
PREDICTION, NO_MOTION = "prediction", "no_motion"
DEFORMATION, NO_MOTION_DEFORMATION = "deformation", "no_motion_deformation"
# Frame 0 of each video is the source itself: PSNR is capped at 100 dB (MSE floor), or
# one +inf would swamp the mean.
PSNR_FLOOR_MSE = 1e-10
PSNR_CAP_DB = 100.0


def metric_key(reference: str, metric: str) -> str:
    """The one name of a score everywhere (logs, JSON, CSV): `{reference}_{metric}`."""
    return f"{reference}_{metric}"


def _as_float(images: Any) -> jax.Array:
    """uint8 frames to [0, 1]; float frames as float32."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def predict(generator_side: Any, batch: Batch) -> Outputs:
    """The outputs the protocol scores, from a generator side in eval mode: the driven
    frames, the no-motion frames (the source rendered at its own keypoints) and both
    deformation fields. The appearance is encoded from `source_lq` (the clean source
    unless the evaluation asks for a degraded one), keypoints from the clean source."""
    src = generator_side.source_state(_as_float(batch["source"]),
                                      _as_float(batch["source_lq"]))
    driven = generator_side.drive(src, _as_float(batch["driving"]))
    still = generator_side.render(src, src["kp"])
    return {PREDICTION: driven["prediction"], NO_MOTION: still["prediction"],
            DEFORMATION: driven["deformation"], NO_MOTION_DEFORMATION: still["deformation"]}


def frame_scores(outputs: Outputs, batch: Batch) -> dict[str, jax.Array]:
    """(N,) scores per key of the three references; the motion metrics where the batch
    carries the synthetic ground truth (`motion_metrics.TRUTH_KEYS`). Traceable."""
    driving = _as_float(batch["driving"])
    images = (outputs[PREDICTION], _as_float(batch["source"]), outputs[NO_MOTION])
    scores: dict[str, jax.Array] = {}
    if motion_metrics.TRUTH_KEYS[0] in batch:
        truth = {k: batch[k] for k in motion_metrics.TRUTH_KEYS}
        motion = metrics.motion_scores(
            truth, (outputs[DEFORMATION], outputs[NO_MOTION_DEFORMATION]), images, driving)
        for reference, values in motion.items():
            scores.update({metric_key(reference, m): v for m, v in values.items()})
    for reference, image in zip(metrics.REFERENCES, images, strict=True):
        values = metrics.image_scores(image, driving, psnr_floor_mse=PSNR_FLOOR_MSE)
        scores.update({metric_key(reference, m): v for m, v in values.items()})
    return scores


def masked_sums(scores: dict[str, jax.Array], mask: jax.Array) -> dict[str, jax.Array]:
    """Sums over the real rows (`mask` 1) of every score, and their count. Traceable."""
    return {"count": mask.sum(), **{k: (v * mask).sum() for k, v in scores.items()}}


def scored_inputs(batch: Batch) -> Batch:
    """The batch entries `frame_scores` reads."""
    keys = ("source", "driving") + motion_metrics.TRUTH_KEYS
    return {k: batch[k] for k in keys if k in batch}


@jax.jit
def _scores_and_sums(outputs: Outputs, inputs: Batch, mask: jax.Array):
    scores = frame_scores(outputs, inputs)
    return scores, masked_sums(scores, mask)


Observer = Callable[[Batch, Outputs, dict[str, np.ndarray]], None]


def host_step(predict_fn: Callable[[Batch], Outputs], observe: Observer | None = None) -> Step:
    """A step on one process's host arrays: `predict_fn(batch)` gives the outputs, scored
    and summed in one jitted program; `observe(batch, outputs, scores)` sees the real
    rows (per-video tables, contact sheets, metrics only the host computes)."""

    def step(batch: Batch, mask: np.ndarray) -> dict[str, Any]:
        outputs = predict_fn(batch)
        scores, sums = jax.device_get(_scores_and_sums(outputs, scored_inputs(batch), mask))
        if observe is not None:
            n = int(mask.sum())
            observe({k: v[:n] for k, v in batch.items()},
                    {k: np.asarray(v)[:n] for k, v in outputs.items()},
                    {k: np.asarray(v)[:n] for k, v in scores.items()})
        return sums

    return step


class Evaluator:
    """One host's share of the held-out videos (`config.data` set by
    `data_pipelines.config.set_reconstruction_eval`) and the protocol's loop over it.

    `names`: the test videos' names; `truth`: the synthetic video collection, which knows
    every frame's landmarks and head mask (None for real data). Bad data raises here,
    before any model runs (`data_pipelines.errors.DatasetNotFoundError`, ValueError)."""

    def __init__(self, data_config: Any, *, batch_size: int, shard_index: int = 0,
                 shard_count: int = 1):
        from data_pipelines.pipeline import build_videos, make_eval_dataset

        videos = build_videos(data_config, "test")
        self.names = [videos.name(i) for i in range(len(videos))]
        self.truth = videos if motion_metrics.has_ground_truth(videos) else None
        self.ds = make_eval_dataset(data_config, batch_size=batch_size,
                                    shard_index=shard_index, shard_count=shard_count)
        self.batch_size = batch_size

    def num_batches(self) -> int:
        """Batches every host runs: the most any host has (the rest are padding)."""
        count = len(self.ds)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            count = int(np.max(multihost_utils.process_allgather(np.array(count))))
        return count

    def batch(self, index: int) -> tuple[Batch, np.ndarray]:
        """Host batch `index` padded to `batch_size` rows by repeating its last one (past
        this host's end, every row repeats its first batch's last), with the ground
        truth where there is one; and the mask of its real rows."""
        batch = self.ds[index] if index < len(self.ds) else None
        n = 0 if batch is None else batch["source"].shape[0]
        template = dict(batch if batch is not None else self.ds[0])
        keys = IMAGE_KEYS + INDEX_KEYS
        if self.truth is not None:
            template.update(motion_metrics.ground_truth(self.truth, template["video_index"],
                                                        template["frame_index"]))
            keys += motion_metrics.TRUTH_KEYS
        pad = self.batch_size - n
        local = {k: np.concatenate(([template[k]] if n else []) + [template[k][-1:]] * pad, 0)
                 for k in keys}
        mask = np.zeros((self.batch_size,), np.float32)
        mask[:n] = 1.0
        return local, mask

    def batches(self) -> Iterator[tuple[Batch, np.ndarray]]:
        for index in range(self.num_batches()):
            yield self.batch(index)

    def run(self, step: Step, progress: Callable[[Iterable, int], Iterable] | None = None
            ) -> dict[str, float]:
        """The mean over every real frame of each key `step` sums ({} without frames).
        `progress(iterable, total)` may wrap the batches (a progress bar)."""
        batches: Iterable = self.batches()
        if progress is not None:
            batches = progress(batches, self.num_batches())
        sums: dict[str, float] = {}
        for local, mask in batches:
            for key, value in step(local, mask).items():
                sums[key] = sums.get(key, 0.0) + float(value)
        count = sums.pop("count", 0.0)
        if count == 0:
            return {}
        return {k: v / count for k, v in sums.items()}
