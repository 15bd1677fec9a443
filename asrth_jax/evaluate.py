"""Reconstruction evaluation (FOMM protocol) with the copy-source floor beside it.

    python -m asrth_jax.evaluate --checkpoint DIR --config configs/vox.py \\
        --data data/vox_256 --out eval/vox [--max-videos N --max-frames N]

The protocol is training's periodic evaluation (`asrth_jax.reconstruction_eval`: the
same data iteration, scores, names and reduction), run here with a predict function on
`inference.Animator`: for every test video, frame 0 is the source and every frame t
(0 included) is driven and compared with the real frame t. The source is encoded once
per video; motion is absolute (with frame 0 as the source, relative motion gives the
same keypoints). Two references are always computed beside the model: copy-source
(predict the clean source frame for every t), the floor each number must beat, and
no-motion (the model driven by its own source frame), which the model equals when it
renders the source without following the driver. Every score is named
`{model,copy_source,no_motion}_{metric}` (the CSV's columns, as in the training logs).

`--data` may be the `--out` of `python -m data_pipelines.prepare` (TFDS), a FOMM
folder with `test/`, a flat folder of clips (its held-out 20 %, as in training), or
the word `synthetic`: the config's procedural test identities (`config.data.synthetic`).
Writes `per_video.csv`, `summary.json` and `contact_sheet.png` (best and worst frames:
source | driving | prediction, and on synthetic data the landmark transfer drawn on the
source) into `--out`.

On synthetic data the renderer's ground truth adds two motion metrics that need no
detector (`asrth_jax.motion_metrics`): `landmark_error`, pixels between where the
predicted deformation sends each true driving landmark and the true source landmark
(copy-source's column is the identity-motion error |driving - source|, which a model
that does not move scores exactly), and `moving_l1`, the L1 on the union of the source
and driving head masks (the background, the same in both frames, left out).

AKD (`asrth_jax.akd`: face landmarks of driving vs generated frame, pixels at 256x256)
is reported beside the image metrics, with the share of frames where a face was not
found (`akd_missing_rate`; those frames are left out of the AKD mean). As each rendering
misses faces on other frames, `akd_all_found` compares the three on the same frames: those
where a face is found in all three (and in the driving frame). `--akd auto`
leaves it out with a one-line note where the landmark detector cannot run, `--akd
require` refuses to start then, `--akd off` skips it. AED is not reported
(`AED_UNAVAILABLE`, listed among the missing metrics of every run).
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from asrth_jax import (
    akd,
    cli_args,
    compile_cache,
    errors,
    media,
    metrics,
    motion_metrics,
    reconstruction_eval,
)

OUTPUT_FILES = ("per_video.csv", "summary.json", "contact_sheet.png")
SYNTHETIC = "synthetic"  # --data value: the config's synthetic test identities
HIGHER_IS_BETTER = {**metrics.HIGHER_IS_BETTER, **motion_metrics.HIGHER_IS_BETTER}
AED_UNAVAILABLE = ("AED needs a face-identity embedding network (FOMM's OpenFace; ArcFace "
                   "today); none ships with this package or its offline dependencies, and "
                   "nothing is downloaded at run time")
MOTION_NOTE = ("landmark_error: pixels from where the deformation sends each true driving "
               "landmark to the true source landmark (copy-source: the identity-motion "
               "error |driving - source|); moving_l1: L1 on the union of the source and "
               "driving head masks")


class EvaluateError(errors.AsrthError, ValueError):
    """Bad evaluation input (data, paths): one-line message."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = cli_args.OneLineParser(prog="python -m asrth_jax.evaluate", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="Orbax checkpoint directory")
    weights.add_argument("--torch-checkpoint", help="released AdaSR .pth.tar")
    p.add_argument("--config", required=True, help="config file, e.g. configs/vox.py")
    p.add_argument("--data", required=True,
                   help="prepared TFDS dir, FOMM folder (test/), folder of clips, or "
                        "'synthetic' (the config's synthetic test identities, with motion "
                        "metrics from their ground truth)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--baseline", default="copy-source", choices=("copy-source",),
                   help="baseline computed beside the model (always copy-source)")
    count = cli_args.non_negative_int
    p.add_argument("--max-videos", type=count, default=0, help="first N test videos (0: all)")
    p.add_argument("--max-frames", type=count, default=0,
                   help="N frames per video, evenly spaced from frame 0 (0: all)")
    p.add_argument("--batch-size", type=count, default=0,
                   help="frames per step (0: config.data.eval.batch_size)")
    p.add_argument("--degraded-source", action="store_true",
                   help="encode the appearance from frame 0 degraded with "
                        "config.data.degradation (fixed seed) instead of the clean frame 0 "
                        "(keypoints and copy-source stay the clean frame, as in training)")
    p.add_argument("--contact-cases", type=count, default=3,
                   help="best and worst frames shown")
    p.add_argument("--akd", default="auto", choices=("auto", "require", "off"),
                   help="AKD from the offline face-landmark detector: auto (left out with a "
                        "note where it cannot run), require (refuse to start then), off")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    compile_cache.add_flag(p)
    return p.parse_args(argv)


def configure_data(data_config: Any, data_dir: str, *, max_videos: int, max_frames: int,
                   batch_size: int, degraded_source: bool) -> str:
    """Points `config.data` at `data_dir` (kind tfds, vox or hdtf), or at the synthetic
    test identities for `data_dir` == 'synthetic'; returns the kind."""
    from data_pipelines.config import set_reconstruction_eval

    if data_dir == SYNTHETIC:
        data_config.kind = SYNTHETIC
    else:
        data_config.kind = _folder_kind(data_config, Path(data_dir))
    set_reconstruction_eval(data_config, max_videos=max_videos, max_frames=max_frames,
                            degraded_source=degraded_source)
    if batch_size:
        data_config.eval.batch_size = batch_size
    data_config.output_uint8 = True
    return data_config.kind


def _folder_kind(data_config: Any, root: Path) -> str:
    """tfds, vox or hdtf for a --data folder; points `data_config` at it."""
    from data_pipelines.errors import DatasetNotFoundError

    if not root.is_dir():
        raise EvaluateError(f"--data {root} is not a directory; give a prepared TFDS "
                            "dir, a FOMM folder (test/), a folder of clips or 'synthetic'")
    kind = None
    try:
        from data_pipelines.tfds_builder import find_prepared

        find_prepared(root, data_config.tfds_name)
        kind = "tfds"
    except DatasetNotFoundError:
        pass
    except ImportError:  # no TensorFlow Datasets: only raw folders can be read
        pass
    if kind is None:
        kind = "vox" if (root / "test").is_dir() else "hdtf"
    if kind == "tfds":
        data_config.tfds_dir = str(root)
    else:
        data_config.root = str(root)
    return kind


def open_eval_data(data_config: Any, batch_size: int) -> reconstruction_eval.Evaluator:
    """The evaluator over the test split (its video names and, on synthetic data, its
    ground truth). Bad data fails here, before any model."""
    from data_pipelines.errors import DatasetNotFoundError

    try:
        evaluator = reconstruction_eval.Evaluator(data_config, batch_size=batch_size)
    except (DatasetNotFoundError, ValueError) as err:
        raise EvaluateError(str(err)) from None
    if not evaluator.names:
        raise EvaluateError("the test split has no videos; check --data")
    return evaluator


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


class _Cases:
    """Keeps the k best and k worst frames by one metric (with their images)."""

    def __init__(self, metric: str, k: int):
        self.metric, self.k = metric, k
        self.sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        self.best: list = []
        self.worst: list = []
        self.counter = 0

    def add(self, value: float, label: str, images: tuple[np.ndarray, ...]) -> None:
        if math.isnan(value) or self.k <= 0:
            return
        self.counter += 1
        good = self.sign * value
        item_best = (good, self.counter, label, value, images)
        item_worst = (-good, self.counter, label, value, images)
        for heap, item in ((self.best, item_best), (self.worst, item_worst)):
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)

    def sheet(self) -> np.ndarray | None:
        import cv2

        rows = []
        for title, heap in (("best", self.best), ("worst", self.worst)):
            for _, _, label, value, images in sorted(heap, reverse=True):
                row = media.hstack(list(images)).copy()
                scale = max(0.3, row.shape[0] / 256.0 * 0.5)
                text = f"{title} {self.metric}={value:.4f} {label}"
                cv2.putText(row, text, (4, int(14 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX,
                            scale, (255, 255, 0), 1, cv2.LINE_AA)
                rows.append(row)
        return np.concatenate(rows, axis=0) if rows else None


def animator_predict(animator: Any, with_deformation: bool = False
                     ) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """`reconstruction_eval`'s predict on `inference.Animator`: each video's source is
    encoded once (keypoints from the clean frame 0, appearance from `source_lq`) and its
    no-motion frame (the model driven by the clean source frame) rendered once; the
    deformation fields too where the motion metrics need them."""
    video: dict[str, Any] = {"index": None}

    def render(src, frames, motion) -> tuple[np.ndarray, np.ndarray | None]:
        if with_deformation:  # one compiled renderer, which also returns the deformation
            pred, _, field = animator.render_with_deformation(src, frames, motion)
            return pred, field
        return animator.render(src, frames, motion), None

    def predict(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vids = np.asarray(batch["video_index"])
        parts: dict[str, list] = {}
        for v in dict.fromkeys(vids.tolist()):  # the batch's videos, in order
            rows = np.nonzero(vids == v)[0]
            if video["index"] != v:
                src = animator.encode_source(batch["source"][rows[0]],
                                             batch["source_lq"][rows[0]])
                motion = animator.prepare_motion(src, relative=False)
                video.update(index=v, src=src, motion=motion,
                             still=render(src, batch["source"][rows[:1]], motion))
            pred, field = render(video["src"], batch["driving"][rows], video["motion"])
            still, still_field = video["still"]
            outputs = {reconstruction_eval.PREDICTION: pred,
                       reconstruction_eval.NO_MOTION: np.repeat(still, len(rows), 0)}
            if with_deformation:
                outputs[reconstruction_eval.DEFORMATION] = field
                outputs[reconstruction_eval.NO_MOTION_DEFORMATION] = np.repeat(
                    still_field, len(rows), 0)
            for key, value in outputs.items():
                parts.setdefault(key, []).append((rows, value))
        out = {}
        for key, pieces in parts.items():
            first = pieces[0][1]
            out[key] = np.empty((len(vids), *first.shape[1:]), first.dtype)
            for rows, value in pieces:
                out[key][rows] = value
        return out

    return predict


class _Frames:
    """The evaluator's observer: per-video rows, the metrics only the host computes
    (LPIPS, AKD) and the contact sheet's best and worst frames."""

    def __init__(self, names: list[str], host_metrics: tuple[str, ...], cases: _Cases,
                 degraded_source: bool, with_truth: bool):
        self.names, self.host_metrics, self.cases = names, host_metrics, cases
        self.degraded_source, self.with_truth = degraded_source, with_truth
        self.per_video: dict[int, dict[str, list[float]]] = {}
        self._landmarks: dict[tuple[str, int], Any] = {}  # per video: copy, no-motion

    def _video_landmarks(self, reference: str, video: int, image: np.ndarray) -> Any:
        if (reference, video) not in self._landmarks:
            self._landmarks[(reference, video)] = akd.face_landmarks(image)
        return self._landmarks[(reference, video)]

    def _host_scores(self, batch: dict, outputs: dict, target: np.ndarray
                     ) -> dict[str, np.ndarray]:
        images = dict(zip(metrics.REFERENCES, (
            outputs[reconstruction_eval.PREDICTION],
            np.asarray(batch["source"], np.float32) / 255.0,
            outputs[reconstruction_eval.NO_MOTION]), strict=True))
        key = reconstruction_eval.metric_key
        scores = {}
        if "lpips" in self.host_metrics:
            scores.update({key(ref, "lpips"): metrics.lpips(image, target)
                           for ref, image in images.items()})
        if "akd" in self.host_metrics:
            kp_target = akd.landmarks_of(batch["driving"])
            vids = np.asarray(batch["video_index"]).tolist()
            kp_copy = [self._video_landmarks("copy", v, s)
                       for v, s in zip(vids, batch["source"], strict=True)]
            kp_still = [self._video_landmarks("still", v, s) for v, s in zip(
                vids, outputs[reconstruction_eval.NO_MOTION], strict=True)]
            for ref, kp in zip(metrics.REFERENCES, (
                    akd.landmarks_of(outputs[reconstruction_eval.PREDICTION]), kp_copy,
                    kp_still), strict=True):
                scores[key(ref, "akd")] = akd.distances(kp, kp_target)
        return scores

    def __call__(self, batch: dict, outputs: dict, scores: dict[str, np.ndarray]) -> None:
        target = np.asarray(batch["driving"], np.float32) / 255.0
        scores = {**scores, **self._host_scores(batch, outputs, target)}
        vids = np.asarray(batch["video_index"])
        for key, values in scores.items():
            for v, value in zip(vids.tolist(), np.asarray(values, np.float64).tolist(),
                                strict=True):
                self.per_video.setdefault(v, {}).setdefault(key, []).append(value)
        sent = None
        if self.with_truth:  # where the model sends the true landmarks
            sent = np.asarray(motion_metrics.transferred_landmarks(
                outputs[reconstruction_eval.DEFORMATION], batch["driving_landmarks"],
                target.shape[1:3]))
        shown = batch["source_lq" if self.degraded_source else "source"]
        model_key = reconstruction_eval.metric_key("model", self.cases.metric)
        for i, v in enumerate(vids.tolist()):
            label = f"{self.names[v]} t={int(batch['frame_index'][i, 1])}"
            tiles = (shown[i], batch["driving"][i], outputs[reconstruction_eval.PREDICTION][i])
            if sent is not None:
                tiles += (motion_metrics.draw_landmark_transfer(
                    batch["source"][i], batch["source_landmarks"][i], sent[i]),)
            self.cases.add(float(scores[model_key][i]), label, tiles)

    def rows(self, metric_names: list[str]) -> list[dict[str, Any]]:
        rows = []
        for v in sorted(self.per_video):
            acc = self.per_video[v]
            row = {"video_index": v, "video": self.names[v],
                   "frames": len(next(iter(acc.values())))}
            for name in metric_names:
                for ref in metrics.REFERENCES:
                    key = reconstruction_eval.metric_key(ref, name)
                    row[key] = _mean(acc[key])
            rows.append(row)
        return rows

    def values(self, key: str) -> list[float]:
        """Every frame's value of `key`, over all videos."""
        return [x for acc in self.per_video.values() for x in acc[key]]


def evaluate(animator: Any, evaluator: reconstruction_eval.Evaluator, *, cases: int = 3,
             quiet: bool = False, degraded_source: bool = False,
             akd_unavailable: str | None = None) -> dict[str, Any]:
    """Runs the protocol (`reconstruction_eval.Evaluator`, from `open_eval_data`) with
    `animator`; returns per-video rows, summary and the contact sheet. LPIPS and AKD are
    added unless unavailable (AKD: `akd_unavailable` says why not); the motion metrics
    where there is ground truth."""
    from tqdm import tqdm

    unavailable = metrics.unavailable_metrics()
    if akd_unavailable is not None:
        unavailable["akd"] = akd_unavailable
    unavailable["aed"] = AED_UNAVAILABLE
    metric_names = [m for m in (*metrics.METRICS, "akd") if m not in unavailable]
    with_truth = evaluator.truth is not None
    if with_truth:
        metric_names += list(motion_metrics.MOTION_METRICS)
    host_metrics = tuple(m for m in ("lpips", "akd") if m in metric_names)
    sheet_metric = "lpips" if "lpips" in metric_names else "l1"
    kept = _Cases(sheet_metric, cases)
    frames = _Frames(evaluator.names, host_metrics, kept, degraded_source, with_truth)
    step = reconstruction_eval.host_step(animator_predict(animator, with_truth), frames)
    t0 = time.perf_counter()
    means = evaluator.run(step, progress=lambda batches, total: tqdm(
        batches, total=total, unit="batch", desc="evaluate", disable=quiet,
        dynamic_ncols=True))
    seconds = time.perf_counter() - t0

    rows = frames.rows(metric_names)
    num_frames = sum(r["frames"] for r in rows)
    key = reconstruction_eval.metric_key
    # The protocol's metrics as the evaluator reduced them; the host-only ones (AKD
    # leaves out frames without a face) from their per-frame values.
    mean = {key(ref, m): means[key(ref, m)] if m not in host_metrics
            else _mean(frames.values(key(ref, m)))
            for m in metric_names for ref in metrics.REFERENCES}
    summary = {
        "protocol": "FOMM reconstruction: frame 0 is the source, every frame t driven; "
                    "means over all frames",
        "source": "degraded (config.data.degradation)" if degraded_source else "clean frame 0",
        "num_videos": len(rows),
        "num_frames": num_frames,
        "metrics": {m: {**{ref: mean[key(ref, m)] for ref in metrics.REFERENCES},
                        "higher_is_better": HIGHER_IS_BETTER[m]}
                    for m in metric_names},
        "unavailable": unavailable,
        **({"akd_missing_rate": {
            ref: float(np.mean(np.isnan(frames.values(key(ref, "akd")))))
            for ref in metrics.REFERENCES},
            "akd_all_found": _akd_all_found(frames)}
           if "akd" in metric_names else {}),
        **({"motion_metrics": MOTION_NOTE} if with_truth else {}),
        "psnr_cap_db": reconstruction_eval.PSNR_CAP_DB,
        "contact_sheet_metric": sheet_metric,
        "seconds_per_frame": seconds / max(num_frames, 1),
    }
    return {"rows": rows, "summary": summary, "sheet": kept.sheet(),
            "metric_names": metric_names}


def _akd_all_found(frames: _Frames) -> dict[str, float]:
    """AKD of each reference over the frames where all of them have a face, and their
    count: the like-for-like comparison (each reference's own mean leaves out its own
    misses, which may be its hardest frames)."""
    per_ref = np.array([frames.values(reconstruction_eval.metric_key(ref, "akd"))
                        for ref in metrics.REFERENCES], np.float64)
    found = ~np.isnan(per_ref).any(axis=0)
    means = per_ref[:, found].mean(axis=1) if found.any() else np.full(len(per_ref), np.nan)
    return {**dict(zip(metrics.REFERENCES, means.tolist(), strict=True)),
            "frames": int(found.sum())}


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':14s} {'model':>10s} {'copy-source':>12s} {'no-motion':>10s}"]
    for name, vals in summary["metrics"].items():
        lines.append(f"{name:14s} {vals['model']:10.4f} {vals['copy_source']:12.4f} "
                     f"{vals['no_motion']:10.4f}")
    if "akd_missing_rate" in summary:
        rates = summary["akd_missing_rate"]
        lines.append(f"{'no face':14s} {rates['model']:10.2%} {rates['copy_source']:12.2%} "
                     f"{rates['no_motion']:10.2%}  (AKD: frames without landmarks, left out)")
        common = summary["akd_all_found"]
        lines.append(f"{'akd all found':14s} {common['model']:10.4f} "
                     f"{common['copy_source']:12.4f} {common['no_motion']:10.4f}  (the "
                     f"{common['frames']} frames with a face in all three)")
    for name, why in summary["unavailable"].items():
        lines.append(f"{name:14s} {'missing':>10s} {'missing':>12s} {'missing':>10s}  ({why})")
    lines.append("no-motion: the model driven by its own source frame; a model whose scores "
                 "equal it ignores the driving motion")
    if "motion_metrics" in summary:
        lines.append(summary["motion_metrics"])
    return "\n".join(lines)


def _check_inputs(args: argparse.Namespace) -> Path:
    """Every check that needs no model or data read: paths, weights, AKD availability."""
    import os

    out = cli_args.check_output_dir(args.out, "--out", overwrite=args.overwrite,
                                    files=OUTPUT_FILES)
    if args.checkpoint is not None and not os.path.isdir(args.checkpoint):
        raise EvaluateError(f"--checkpoint {args.checkpoint} is not a directory; give an "
                            "Orbax checkpoint (a training workdir or convert --out)")
    if args.torch_checkpoint is not None and not os.path.isfile(args.torch_checkpoint):
        raise EvaluateError(f"--torch-checkpoint {args.torch_checkpoint} does not exist")
    if args.data != SYNTHETIC and not Path(args.data).is_dir():
        raise EvaluateError(f"--data {args.data} is not a directory; give a prepared TFDS "
                            "dir, a FOMM folder (test/), a folder of clips or 'synthetic'")
    if args.akd == "require" and (why := akd.status()) is not None:
        raise EvaluateError(f"{why} (--akd require; pass --akd auto to evaluate without it)")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    compile_cache.enable_if(args.compile_cache)
    try:
        out = _check_inputs(args)
    except (EvaluateError, cli_args.OutputPathError) as err:
        raise cli_args.fail(str(err)) from None
    akd_why = "skipped (--akd off)" if args.akd == "off" else akd.status()
    if args.akd == "auto" and akd_why is not None:
        print(f"note: {akd_why}; evaluating without AKD", file=sys.stderr)

    from asrth_jax import inference, model_loading
    from asrth_jax.config_lib import ConfigError, load_config_file

    try:
        config = load_config_file(args.config)
        configure_data(config.data, args.data, max_videos=args.max_videos,
                       max_frames=args.max_frames, batch_size=args.batch_size,
                       degraded_source=args.degraded_source)
        data = open_eval_data(config.data, config.data.eval.batch_size)
    except (EvaluateError, ConfigError) as err:
        raise cli_args.fail(str(err)) from None
    try:
        model = model_loading.load_generator_side(
            config, checkpoint=args.checkpoint, torch_checkpoint=args.torch_checkpoint,
            dtype=None if args.dtype == "float32" else args.dtype)
    except model_loading.ModelLoadError as err:
        raise cli_args.fail(f"{err} (config {args.config})") from None
    animator = inference.make_animator(model, config.data.eval.batch_size)
    try:
        result = evaluate(animator, data, cases=args.contact_cases, quiet=args.quiet,
                          degraded_source=args.degraded_source, akd_unavailable=akd_why)
    except errors.AsrthError as err:  # a corrupt clip (DataError), ...
        raise cli_args.fail(str(err)) from None

    out.mkdir(parents=True, exist_ok=True)
    fields = ["video_index", "video", "frames"] + [
        reconstruction_eval.metric_key(ref, m) for m in result["metric_names"]
        for ref in metrics.REFERENCES]
    with open(out / "per_video.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(result["rows"])
    summary = dict(result["summary"], checkpoint=args.checkpoint or args.torch_checkpoint,
                   config=args.config, data=args.data)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    sheet_path = out / "contact_sheet.png"
    if result["sheet"] is not None:
        media.write_png(sheet_path, result["sheet"])
    elif sheet_path.exists():  # --overwrite: a sheet from an earlier run would mislead
        sheet_path.unlink()
    print(format_table(summary))
    print(f"{summary['num_videos']} videos, {summary['num_frames']} frames -> {out}",
          file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
