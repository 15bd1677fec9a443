"""HopeNet head-pose teacher (Ruiz et al.), Flax NNX, inference only.

Architecture (deep-head-pose `Hopenet` with torchvision's ResNet-50 `Bottleneck`,
layers [3, 4, 6, 3]): 7x7/2 conv (no bias) + BN + ReLU + 3x3/2 max-pool (pad 1),
four bottleneck stages (stride on the 3x3 conv, 1x1 conv + BN projection on the first
block of each stage), AvgPool2d(7), then three Linear(2048, 66) heads fc_yaw,
fc_pitch, fc_roll giving bin logits. BatchNorm always uses running statistics: the
teacher is frozen. The checkpoint also holds `fc_finetune`, a layer the network
defines but never uses ("vestigial"); the converter accepts and drops it.

The reference training feeds the teacher the driving frame (RGB in [0, 1]) resized
to 224x224 with `transforms.Resize` (bilinear) and normalised with ImageNet mean/std:
`hopenet_preprocess` reproduces that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asrth_jax.models.blocks import traceable_rngs
from asrth_jax.models.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsError,
    load_flat_npz,
    load_torch_state_dict,
    module_from_flat,
    module_to_flat,
    resolve_npz_out,
    save_flat_npz,
)

NUM_BINS = 66
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # planes, blocks, stride
EXPANSION = 4
BN_EPS = 1e-5  # torch BatchNorm2d default


def _bn(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(features, use_running_average=True, epsilon=BN_EPS, rngs=rngs)


def _conv(in_ch: int, out_ch: int, k: int, stride: int, pad: int, rngs: nnx.Rngs) -> nnx.Conv:
    # Explicit symmetric padding: 'SAME' would pad stride-2 convs asymmetrically.
    return nnx.Conv(
        in_ch, out_ch, (k, k), strides=stride, padding=((pad, pad), (pad, pad)),
        use_bias=False, rngs=rngs,
    )  # fmt: skip


class Bottleneck(nnx.Module):
    """torchvision ResNet Bottleneck (stride on the 3x3 conv)."""

    def __init__(self, in_ch: int, planes: int, stride: int, project: bool, *, rngs: nnx.Rngs):
        out_ch = planes * EXPANSION
        self.conv1 = _conv(in_ch, planes, 1, 1, 0, rngs)
        self.bn1 = _bn(planes, rngs)
        self.conv2 = _conv(planes, planes, 3, stride, 1, rngs)
        self.bn2 = _bn(planes, rngs)
        self.conv3 = _conv(planes, out_ch, 1, 1, 0, rngs)
        self.bn3 = _bn(out_ch, rngs)
        # torch names these downsample.0 / downsample.1.
        self.downsample_conv = _conv(in_ch, out_ch, 1, stride, 0, rngs) if project else None
        self.downsample_bn = _bn(out_ch, rngs) if project else None

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample_conv is not None:
            x = self.downsample_bn(self.downsample_conv(x))
        return jax.nn.relu(out + x)


class HopeNet(nnx.Module):
    """(N, 224, 224, 3) ImageNet-normalised images -> {'yaw','pitch','roll'} (N, 66) logits."""

    def __init__(self, *, rngs: nnx.Rngs, num_bins: int = NUM_BINS):
        self.conv1 = _conv(3, 64, 7, 2, 3, rngs)
        self.bn1 = _bn(64, rngs)
        in_ch = 64
        for index, (planes, blocks, stride) in enumerate(STAGES, start=1):
            layer = []
            for b in range(blocks):
                project = b == 0 and (stride != 1 or in_ch != planes * EXPANSION)
                layer.append(Bottleneck(in_ch, planes, stride if b == 0 else 1, project, rngs=rngs))
                in_ch = planes * EXPANSION
            setattr(self, f"layer{index}", nnx.List(layer))
        self.fc_yaw = nnx.Linear(in_ch, num_bins, rngs=rngs)
        self.fc_pitch = nnx.Linear(in_ch, num_bins, rngs=rngs)
        self.fc_roll = nnx.Linear(in_ch, num_bins, rngs=rngs)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        # MaxPool2d(3, 2, padding=1): torch pads with -inf.
        x = jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
        )
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
        # AvgPool2d(7) as in the reference (global at 224 input, where layer4 is 7x7).
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 7, 7, 1), (1, 7, 7, 1), "VALID") / 49.0
        if x.shape[1:3] != (1, 1):
            raise ValueError(
                f"HopeNet needs 224x224-class inputs (layer4 7x7), got pooled {x.shape[1:3]}; "
                "use hopenet_preprocess"
            )
        x = x.reshape(x.shape[0], -1)
        return {"yaw": self.fc_yaw(x), "pitch": self.fc_pitch(x), "roll": self.fc_roll(x)}


def hopenet_preprocess(images: jax.Array, antialias: bool = False) -> jax.Array:
    """Reference teacher input: bilinear resize to 224x224, then ImageNet mean/std.

    `images`: (N, H, W, 3) RGB in [0, 1]. The reference used torchvision's
    `transforms.Resize` on tensors, which in the torchvision of that time meant
    `F.interpolate(bilinear, align_corners=False)` without antialiasing; jax's
    half-pixel 'linear' resize without antialias gives the same taps (edge taps
    clamp the same way). `antialias=True` matches newer torchvision defaults.
    """
    n, _, _, c = images.shape
    resized = jax.image.resize(
        images.astype(jnp.float32), (n, 224, 224, c), method="linear", antialias=antialias
    )
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (resized - mean) / std


def make_hopenet(rngs: nnx.Rngs | None = None) -> HopeNet:
    # traceable_rngs: built abstractly (module_from_flat), plain Rngs trace 2.5x slower.
    return HopeNet(rngs=rngs or traceable_rngs(0))


_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def hopenet_from_torch_state_dict(sd: Mapping[str, np.ndarray]) -> HopeNet:
    """Convert the `hopenet_robust_alpha1.pkl` state dict (torchvision ResNet names).

    conv weights OIHW -> HWIO, Linear (out, in) -> (in, out), BN weight/bias/
    running_mean/running_var -> scale/bias/mean/var. `num_batches_tracked` and the
    unused `fc_finetune` are dropped. Unknown, missing and mis-shaped entries are
    reported together in one ValueError.
    """
    flat: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for key, value in sd.items():
        value = np.asarray(value)
        if key.endswith("num_batches_tracked") or key.startswith("fc_finetune."):
            continue
        module, _, param = key.rpartition(".")
        path = re.sub(r"\.downsample\.0$", ".downsample_conv", module)
        path = re.sub(r"\.downsample\.1$", ".downsample_bn", path).replace(".", "/")
        leaf = path.rpartition("/")[2]
        if leaf.startswith("conv") or leaf == "downsample_conv":
            if param != "weight" or value.ndim != 4:
                problems.append(f"unexpected {key}")
                continue
            flat[f"{path}/kernel"] = np.transpose(value, (2, 3, 1, 0))
        elif leaf.startswith("bn") or leaf == "downsample_bn":
            if param not in _BN_NAMES:
                problems.append(f"unexpected {key}")
                continue
            flat[f"{path}/{_BN_NAMES[param]}"] = value
        elif leaf in ("fc_yaw", "fc_pitch", "fc_roll") and param in ("weight", "bias"):
            flat[f"{path}/kernel" if param == "weight" else f"{path}/bias"] = (
                value.T if param == "weight" else value
            )
        else:
            problems.append(f"unexpected {key}")
    try:
        module = module_from_flat(make_hopenet, flat, "hopenet state dict")
    except ValueError as err:
        problems.append(str(err))
        module = None
    if problems:
        raise WeightsError("hopenet state dict: " + "; ".join(problems))
    return module


def convert_hopenet_file(torch_path: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """hopenet_robust_alpha1.pkl -> .npz of flat 'layer1/0/conv1/kernel' keys; returns its path.

    `out_path` ending in .npz is the file; anything else is a directory that gets
    `hopenet.npz`.
    """
    module = hopenet_from_torch_state_dict(load_torch_state_dict(torch_path))
    out = resolve_npz_out(out_path, "hopenet.npz")
    save_flat_npz(out, module_to_flat(module))
    return out


def load_hopenet_npz(path: str | os.PathLike) -> HopeNet:
    """HopeNet teacher with weights from `convert_hopenet_file` output."""
    return module_from_flat(make_hopenet, load_flat_npz(path), f"hopenet weights {path}")
