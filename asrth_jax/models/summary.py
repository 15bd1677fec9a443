"""Parameters per network and compiled FLOPs per frame.

    python -m asrth_jax.models.summary --config configs/hdtf_512.py

FLOPs come from XLA's cost analysis of the compiled inference forward (eval mode,
batch 1): the appearance encoder + keypoints + pose for the source, pose for the
driving frame, then dense motion, warp and SPADE decoder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax import cli_args, errors
from asrth_jax.config_lib import load_config_file
from asrth_jax.models import adasr


def compiled_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` according to XLA's cost analysis of the compiled program."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per device program
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def summarize(config, image_size: int | None = None) -> dict:
    size = image_size or config.image_size
    gen_side = adasr.build_generator(config.model)
    disc = adasr.build_discriminator(config.model)
    gen_side.eval()
    disc.eval()
    params = {name: adasr.count_params(getattr(gen_side, name))
              for name in ("generator", "kp_detector", "he_estimator")}
    params["discriminator"] = adasr.count_params(disc)
    graphdef, state = nnx.split(gen_side)
    frame = jax.ShapeDtypeStruct((1, size, size, config.model.common.image_channel), jnp.float32)

    def forward(state, source, driving):
        return nnx.merge(graphdef, state)(source, driving)["prediction"]

    start = time.perf_counter()
    flops = compiled_flops(forward, state, frame, frame)
    return {
        "image_size": size,
        "parameters": params,
        "parameters_total": sum(params.values()),
        "inference_gflops_per_frame": flops / 1e9,
        "compile_seconds": round(time.perf_counter() - start, 1),
        "backend": jax.default_backend(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asrth_jax.models.summary")
    parser.add_argument("--config", required=True, help="config file, e.g. configs/vox.py")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    try:
        config = load_config_file(args.config)
        size = args.image_size or config.image_size
        adasr.validate_image_shape(config.model, (1, size, size, config.model.common.image_channel))
    except errors.AsrthError as exc:  # a bad config, or an image size the model cannot take
        raise cli_args.fail(str(exc)) from None
    result = summarize(config, size)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'network':<16}{'parameters':>16}")
    for name, count in result["parameters"].items():
        print(f"{name:<16}{count:>16,}")
    print(f"{'total':<16}{result['parameters_total']:>16,}")
    print(f"inference forward at {result['image_size']}x{result['image_size']}: "
          f"{result['inference_gflops_per_frame']:.2f} GFLOPs/frame "
          f"(XLA cost analysis, {result['backend']}; compiled in "
          f"{result['compile_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
