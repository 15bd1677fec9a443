"""Side-by-side CPU inference speed: our animator against the PyTorch reference model.

    python tests/compare_cpu_inference.py --config configs/vox.py [--repeats 5] [--threads 2]

Both sides run the released architecture (the config's model must equal the release:
parameter counts are checked) with random weights, float32, batch 1, interleaved
frame by frame so that load on the machine hits both alike. Per driving frame:

* PyTorch, as the reference demo does it: keypoint detector and head pose of the
  source, head pose of the driving frame, generator (source encoding included);
* ours, as `python -m asrth_jax.animate` does it: the source is encoded once per video
  (`Animator.encode_source`), then each frame is `Animator.render_batches` (driving
  head pose, relative keypoints, dense motion, decoder).

Prints median seconds per frame for each and their ratio, and writes JSON with --out.
Not a test (pytest does not collect it): timings belong in benchmarks, not asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/compare_cpu_inference.py")
    parser.add_argument("--config", default="configs/vox.py")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    # XLA:CPU uses every core it sees: pin the process to `--threads` cores so both
    # frameworks get the same number.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, cores)
    import jax
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    import reference_torch as ref

    from asrth_jax import inference
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.models import adasr

    torch.set_num_threads(args.threads)
    config = load_config_file(args.config)
    size = config.image_size
    nets = ref.build_reference(ref.RELEASED_MODEL_PARAMS)
    for net in nets.values():
        net.eval()
    generator_side = adasr.build_generator(config.model)
    ours = {"generator": adasr.count_params(generator_side.generator),
            "kp_detector": adasr.count_params(generator_side.kp_detector),
            "he_estimator": adasr.count_params(generator_side.he_estimator)}
    theirs = {k: ref.count_parameters(nets[k]) for k in ours}
    if ours != theirs:
        raise SystemExit(f"error: {args.config}'s model is not the release ({ours} vs {theirs})")

    rng = np.random.default_rng(0)
    source = rng.uniform(size=(size, size, 3)).astype(np.float32)
    frames = rng.uniform(size=(args.repeats + 1, size, size, 3)).astype(np.float32)

    animator = inference.make_animator(generator_side, batch_size=1)
    src = animator.encode_source(source)
    motion = animator.prepare_motion(src, frames[0], relative=True)

    def ours_frame(frame: np.ndarray) -> float:
        start = time.perf_counter()
        for batch in animator.render_batches(src, frame[None], motion):
            np.asarray(batch)
        return time.perf_counter() - start

    source_t = torch.from_numpy(source.transpose(2, 0, 1)[None].copy())

    @torch.no_grad()
    def torch_frame(frame: np.ndarray) -> float:
        driving_t = torch.from_numpy(frame.transpose(2, 0, 1)[None].copy())
        start = time.perf_counter()
        kp_canonical = nets["kp_detector"](source_t)
        kp_source = ref.keypoint_transformation(kp_canonical, nets["he_estimator"](source_t))
        kp_driving = ref.keypoint_transformation(kp_canonical, nets["he_estimator"](driving_t))
        nets["generator"](source_t, kp_driving=kp_driving, kp_source=kp_source)
        return time.perf_counter() - start

    ours_frame(frames[0])  # compiles
    torch_frame(frames[0])  # allocator warm-up
    ours_times, torch_times = [], []
    for i in range(1, args.repeats + 1):
        torch_times.append(torch_frame(frames[i]))
        ours_times.append(ours_frame(frames[i]))
        print(f"frame {i}: torch {torch_times[-1]:.2f} s, ours {ours_times[-1]:.2f} s",
              flush=True)
    result = {"config": args.config, "image_size": size, "threads": args.threads,
              "device": jax.devices()[0].device_kind, "torch_version": torch.__version__,
              "jax_version": jax.__version__,
              "torch_s_per_frame": statistics.median(torch_times),
              "ours_s_per_frame": statistics.median(ours_times),
              "torch_times": torch_times, "ours_times": ours_times}
    result["ours_over_torch"] = result["ours_s_per_frame"] / result["torch_s_per_frame"]
    print(f"{size}x{size}: torch {result['torch_s_per_frame']:.2f} s/frame, ours "
          f"{result['ours_s_per_frame']:.2f} s/frame (ratio {result['ours_over_torch']:.2f})")
    if args.out:
        Path(args.out).write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
