"""Weight converters: released AdaSR PyTorch checkpoints, VGG19 and HopeNet.

    python -m asrth_jax.convert --torch-checkpoint mix-train.pth.tar \
        --config configs/hdtf_512.py --out checkpoints/adasr_512
    python -m asrth_jax.convert --vgg19 vgg19-dcbb9e9d.pth --out weights/vgg19.npz
    python -m asrth_jax.convert --hopenet hopenet_robust_alpha1.pkl --out weights/hopenet.npz

PyTorch is needed only to unpickle `.pth` files (`pip install '.[dev]'`).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import numpy as np
from flax import nnx

# Torch Sequential children named like '3dr0', 'down1', 'b5_3' become list indices.
_SEQUENTIAL_CHILD = re.compile(r"^(?:3dr|2dr|down|up|b\d_)(\d+)$")
_IGNORED_LEAVES = ("num_batches_tracked",)
# Fixed buffers in the release that our modules compute instead of storing.
_IGNORED_KEYS = {"kp_detector": ("down.weight",)}

TORCH_NETWORKS = ("generator", "kp_detector", "he_estimator", "discriminator")


class ConversionError(ValueError):
    """Raised with every mismatch of a conversion listed, one per line."""


def import_torch():
    try:
        import torch
    except ImportError:
        raise SystemExit(
            "error: reading PyTorch checkpoints needs torch; install it with "
            "pip install '.[dev]'") from None
    return torch


def load_torch_file(path: str) -> dict[str, Any]:
    """Unpickles a `.pth`/`.pkl` file on the CPU into nested dicts of numpy arrays."""
    torch = import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise SystemExit(f"error: {path} does not exist; pass the checkpoint file "
                         "you downloaded") from None
    except Exception as exc:  # corrupt or not a torch file
        raise SystemExit(f"error: cannot read {path} as a PyTorch file ({exc})") from None

    def to_numpy(x):
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        if isinstance(x, dict):
            return {k: to_numpy(v) for k, v in x.items()}
        return x

    return to_numpy(obj)


def torch_key_to_path(key: str, scales: tuple = (1,)) -> tuple[tuple, str]:
    """Maps a torch state-dict key to (our module path, torch leaf name)."""
    parts = key.split(".")
    leaf = parts.pop()
    path: list[Any] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        match = _SEQUENTIAL_CHILD.match(part)
        if match:
            path.append(int(match.group(1)))
        elif part.isdigit():
            path.append(int(part))
        elif part == "discs":  # ModuleDict keyed by str(scale) -> list in scale order
            scale_key = parts[i + 1].replace("-", ".")
            index = [str(s) for s in scales].index(scale_key)
            path.extend(["discs", index])
            i += 1
        else:
            path.append(part)
            if part == "mlp_shared":  # Sequential(conv, ReLU): our conv is the module
                i += 1
        i += 1
    return tuple(path), leaf


def _spectral_v_to_ours(v: np.ndarray, kernel_oihw: np.ndarray) -> np.ndarray:
    # torch flattens the weight as (out, in*kh*kw); ours flattens HWIO as (kh*kw*in).
    o, i, kh, kw = kernel_oihw.shape
    return v.reshape(i, kh, kw).transpose(1, 2, 0).reshape(-1)


def _convert_leaf(leaf: str, value: np.ndarray, sd: dict, key: str) -> list[tuple[str, np.ndarray]]:
    if leaf in ("weight", "weight_orig"):
        if value.ndim == 5:
            return [("kernel", value.transpose(2, 3, 4, 1, 0))]
        if value.ndim == 4:
            return [("kernel", value.transpose(2, 3, 1, 0))]
        if value.ndim == 2:
            return [("kernel", value.T)]
        return [("scale", value)]
    if leaf == "bias":
        return [("bias", value)]
    if leaf == "running_mean":
        return [("mean", value)]
    if leaf == "running_var":
        return [("var", value)]
    if leaf == "weight_u":
        return [("u", value)]
    if leaf == "weight_v":
        orig = sd[key[: -len("weight_v")] + "weight_orig"]
        return [("v", _spectral_v_to_ours(value, orig))]
    raise KeyError(leaf)


def convert_state_dict(network: str, state_dict: dict[str, np.ndarray], module: nnx.Module,
                       scales: tuple = (1,)) -> None:
    """Loads a released torch state dict into `module` in place.

    Every unknown key, missing key and shape mismatch is collected and reported at once.
    """
    target = dict(nnx.to_flat_state(nnx.state(module)))
    problems: list[str] = []
    seen: set[tuple] = set()
    updates: dict[tuple, np.ndarray] = {}
    ignored = _IGNORED_KEYS.get(network, ())
    for key, value in state_dict.items():
        if key.endswith(_IGNORED_LEAVES) or key in ignored:
            continue
        path, leaf = torch_key_to_path(key, scales)
        try:
            converted = _convert_leaf(leaf, np.asarray(value), state_dict, key)
        except KeyError:
            problems.append(f"{network}: unknown key {key}")
            continue
        for name, array in converted:
            full = path + (name,)
            if full not in target:
                problems.append(f"{network}: unknown key {key} (no {'/'.join(map(str, full))})")
                continue
            expected = tuple(target[full].get_value().shape)
            if tuple(array.shape) != expected:
                problems.append(f"{network}: shape mismatch for {key}: checkpoint "
                                f"{tuple(array.shape)} vs model {expected}")
                continue
            seen.add(full)
            updates[full] = array
    for path in sorted(set(target) - seen, key=str):
        problems.append(f"{network}: missing key for {'/'.join(map(str, path))}")
    if problems:
        raise ConversionError("\n".join(problems))
    for path, array in updates.items():
        variable = target[path]
        variable.set_value(np.asarray(array, dtype=variable.get_value().dtype))


def convert_released_checkpoint(checkpoint: dict[str, Any], generator_side: nnx.Module,
                                discriminator: nnx.Module | None) -> None:
    """Loads all networks of a released `mix-train.pth.tar` dict; errors listed together."""
    missing = [n for n in TORCH_NETWORKS[:3] if n not in checkpoint]
    if missing:
        raise ConversionError(
            f"checkpoint lacks {missing}; expected a dict with {list(TORCH_NETWORKS)}")
    problems = []
    pairs = [(n, getattr(generator_side, n)) for n in TORCH_NETWORKS[:3]]
    if discriminator is not None and "discriminator" in checkpoint:
        pairs.append(("discriminator", discriminator))
    for name, module in pairs:
        scales = getattr(module, "scales", (1,))
        try:
            convert_state_dict(name, checkpoint[name], module, scales)
        except ConversionError as exc:
            problems.append(str(exc))
    if problems:
        raise ConversionError("\n".join(problems))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m asrth_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--torch-checkpoint", help="released AdaSR checkpoint (.pth.tar)")
    source.add_argument("--vgg19", help="torchvision vgg19 weights (.pth)")
    source.add_argument("--hopenet", help="HopeNet weights (hopenet_robust_alpha1.pkl)")
    parser.add_argument("--config", help="model config for --torch-checkpoint")
    parser.add_argument("--out", required=True, help="output directory (or .npz file)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)

    import os

    if args.vgg19 or args.hopenet:
        if os.path.exists(args.out) and not args.overwrite:
            raise SystemExit(f"error: {args.out} exists; choose another --out or pass "
                             "--overwrite")
        if args.vgg19:
            from asrth_jax.models.vgg import convert_vgg19_file

            convert_vgg19_file(args.vgg19, args.out)
        else:
            from asrth_jax.models.hopenet import convert_hopenet_file

            convert_hopenet_file(args.hopenet, args.out)
        print(f"wrote {args.out}")
        return 0

    if not args.config:
        raise SystemExit("error: --torch-checkpoint needs --config (e.g. configs/hdtf_512.py)")
    from asrth_jax import checkpoints
    from asrth_jax.config_lib import load_config_file
    from asrth_jax.models import adasr

    config = load_config_file(args.config)
    checkpoint = load_torch_file(args.torch_checkpoint)
    if not isinstance(checkpoint, dict):
        raise SystemExit(f"error: {args.torch_checkpoint} is not a dict of state dicts")
    generator_side = adasr.build_generator(config.model)
    discriminator = adasr.build_discriminator(config.model)
    try:
        convert_released_checkpoint(checkpoint, generator_side, discriminator)
    except ConversionError as exc:
        print(f"error: {args.torch_checkpoint} does not match {args.config}:\n{exc}",
              file=sys.stderr)
        return 1
    try:
        out = checkpoints.save_models(args.out, generator_side, discriminator,
                                      overwrite=args.overwrite)
    except FileExistsError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
