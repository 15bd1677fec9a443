"""The PyTorch reference model's inference speed, for `launch/gpu_benchmark.sh` to set
beside ours on the same device.

    python tests/torch_reference_benchmark.py --sizes 512,256 --dtypes bfloat16,float32 \
        --batches 1,8 --device cuda --out torch_reference.json

The released architecture (`reference_torch.RELEASED_MODEL_PARAMS`; `--model tiny`: the
tests' small one) with PyTorch's default random weights, eval mode, run as AdaSR's demo
loop runs it: the source's canonical keypoints and head pose once, then per batch of
driving frames their head pose and the generator (which encodes the source again, as
the release does), the prediction copied to the host. bfloat16 is `torch.autocast`, as
the release would run in mixed precision; float32 is plain. Per (size, dtype, batch):
seconds from the first call to the first batch on the host, and the median seconds per
batch over `--steps` batches after it. The JSON (`cases` keyed `SIZE_DTYPE_bBATCH`, as
`asrth_jax.benchmark_suite` matches them with ours) is rewritten after every case.

Without torch, or with `--device cuda` and no CUDA device, it writes the reason
(`skipped`) and exits 0: the suite reports the reference as skipped, not failed.
Not a test (pytest does not collect it): timings belong in benchmarks, not asserts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # reference_torch, and asrth_jax uninstalled

from asrth_jax import cli_args  # noqa: E402


def _csv(kind):
    return lambda text: [kind(part) for part in text.split(",")]


def write(path: str | None, result: dict[str, Any]) -> None:
    if path:
        with cli_args.replaced_when_whole(path) as temporary:
            Path(temporary).write_text(json.dumps(result) + "\n")


def skip_reason(device: str) -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return (f"torch {torch.__version__} sees no CUDA device (built for CUDA "
                f"{torch.version.cuda})")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/torch_reference_benchmark.py")
    parser.add_argument("--sizes", type=_csv(int), default=[512, 256])
    parser.add_argument("--dtypes", type=_csv(str), default=["bfloat16", "float32"])
    parser.add_argument("--batches", type=_csv(int), default=[1, 8])
    parser.add_argument("--steps", type=int, default=5, help="timed batches per case")
    parser.add_argument("--model", choices=("released", "tiny"), default="released")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if any(d not in ("bfloat16", "float32") for d in args.dtypes):
        parser.error(f"--dtypes takes bfloat16 and float32, got {args.dtypes}")

    result: dict[str, Any] = {"model": args.model, "device_requested": args.device,
                              "cases": {}, "phase": "start"}
    reason = skip_reason(args.device)
    if reason:
        result.update(skipped=reason, phase="done")
        write(args.out, result)
        print(f"reference skipped: {reason}")
        return 0

    import numpy as np
    import reference_torch as ref
    import torch

    device = torch.device(args.device)
    params = ref.RELEASED_MODEL_PARAMS if args.model == "released" else ref.tiny_model_params()
    start = time.perf_counter()
    nets = {k: v.to(device).eval() for k, v in ref.build_reference(params).items()
            if k != "discriminator"}
    result.update(torch_version=torch.__version__, cuda_version=torch.version.cuda,
                  device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                  cudnn_benchmark=torch.backends.cudnn.benchmark,
                  build_s=time.perf_counter() - start, phase="built")
    write(args.out, result)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    for size in args.sizes:
        for dtype in args.dtypes:
            for batch in args.batches:
                source = torch.from_numpy(rng.uniform(size=(1, 3, size, size)).astype(
                    np.float32)).to(device)
                driving = torch.from_numpy(rng.uniform(size=(batch, 3, size, size)).astype(
                    np.float32)).to(device)
                autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                          enabled=dtype == "bfloat16")

                @torch.no_grad()
                def encode(source=source, batch=batch, autocast=autocast):
                    """The demo's once-per-video work: the source's keypoints."""
                    with autocast:
                        kp_canonical = nets["kp_detector"](source)
                        kp_source = ref.keypoint_transformation(
                            kp_canonical, nets["he_estimator"](source))
                    return ({"value": kp_canonical["value"].expand(batch, -1, -1)},
                            {"value": kp_source["value"].expand(batch, -1, -1)})

                @torch.no_grad()
                def frames(kp_canonical, kp_source, source=source, driving=driving,
                           batch=batch, autocast=autocast):
                    """The demo's per-frame work, on a batch of driving frames."""
                    with autocast:
                        kp_driving = ref.keypoint_transformation(
                            kp_canonical, nets["he_estimator"](driving))
                        prediction = nets["generator"](
                            source.expand(batch, -1, -1, -1), kp_driving=kp_driving,
                            kp_source=kp_source)["prediction"]
                    return prediction.float().cpu()

                sync()
                begin = time.perf_counter()
                kp = encode()
                frames(*kp)
                first_s = time.perf_counter() - begin
                times = []
                for _ in range(args.steps):
                    begin = time.perf_counter()
                    frames(*kp)
                    times.append(time.perf_counter() - begin)
                per_frame = statistics.median(times) / batch
                result["cases"][f"{size}_{dtype}_b{batch}"] = {
                    "size": size, "dtype": dtype, "batch": batch, "first_batch_s": first_s,
                    "s_per_frame": per_frame, "frames_per_s": 1.0 / per_frame}
                result["phase"] = f"{size}_{dtype}_b{batch}"
                write(args.out, result)
                print(f"reference {size}x{size} {dtype} batch {batch}: "
                      f"{per_frame * 1e3:.2f} ms/frame (first batch {first_s:.2f} s)",
                      flush=True)
    result["phase"] = "done"
    write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
