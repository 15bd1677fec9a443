"""Independent PyTorch re-implementation of the released AdaSR networks (tests only).

This module is imported ONLY by tests. It rebuilds the architecture of the released
AdaSR checkpoint (face-vid2vid family, ``OcclusionAwareSPADEGenerator`` + ``KPDetector``
+ ``HEEstimator`` + ``MultiScaleDiscriminator``) so that tests can

1. check parameter counts against the released model (see ``RELEASED_MODEL_PARAMS``),
2. write random-weight checkpoints in the released ``*.pth.tar`` layout
   (``random_released_checkpoint``), and
3. produce reference outputs that the JAX port must match (``forward_reference``).

Module attribute names reproduce the released state-dict keys exactly, e.g.
``dense_motion_network.hourglass.encoder.down_blocks.0.conv.weight``,
``resblocks_3d.3dr0.conv1.weight``, ``decoder.G_middle_0.conv_0.weight_orig``,
``decoder.G_middle_0.norm_0.mlp_shared.0.weight``, ``predictor.down_blocks.down0.conv.weight``,
``block1.b1_0.conv1.weight``, ``discs.1.down_blocks.0.conv.weight_orig``.

Numerical facts that matter for parity (all reproduced below):

* Coordinate grids span [-1, 1] inclusive (``2 * i / (n - 1) - 1``), last axis ordered
  (x, y, z) = (w, h, d).
* Every ``F.grid_sample`` in the release is called WITHOUT ``align_corners``, i.e.
  ``align_corners=False``, bilinear (trilinear for 5-D) and zero padding. We pass
  ``align_corners=False`` explicitly only to silence the warning.
* ``UpBlock3d`` uses NEAREST upsampling with ``scale_factor=(1, 2, 2)`` (depth kept);
  ``DownBlock3d`` is conv(stride 1) -> BN -> ReLU -> AvgPool3d((1, 2, 2)).
  ``DownBlock2d`` is conv -> BN -> ReLU -> AvgPool2d(2).
* SPADE resizes the segmentation map with NEAREST to the activation size, uses an
  affine-free InstanceNorm2d (eps 1e-5, biased variance) and ``x * (1 + gamma) + beta``.
  SPADE-ResNet blocks use leaky_relu(0.2) BEFORE each conv (norm -> act -> conv).
* The SPADE decoder upsamples with ``nn.Upsample(scale_factor=2)`` (nearest).
* ``deform_input`` resizes the deformation with trilinear (align_corners=False) and the
  generator resizes the occlusion map with bilinear (align_corners=False) ONLY when the
  sizes differ; with the released config (and ``tiny_model_params``) they never differ.
* ``HEEstimator`` swaps names: ``fc_roll`` produces ``'yaw'`` and ``fc_yaw`` produces
  ``'roll'``; ``fc_pitch`` produces ``'pitch'``.
* Head-pose bins -> degrees: ``sum(softmax(logits) * arange(66)) * 3 - 99``; degrees ->
  radians with ``/ 180 * 3.14`` (not pi). R = R_x(pitch) @ R_y(yaw) @ R_z(roll);
  kp = kp_canonical @ R^T + t + exp.reshape(B, K, 3).
* Keypoints are 3-D: (B, K, 3) ordered (x, y, z), from a softmax (temperature 0.1) over
  the (D, H, W) heatmap volume.
* The KP detector first downsamples with an anti-aliasing Gaussian (sigma
  ``(1/scale - 1) / 2``, kernel ``2 * round(4 * sigma) + 1``, zero pad, then stride
  ``int(1/scale)`` subsampling). The kernel is a registered buffer (``down.weight``) and is
  part of the state dict.
* BatchNorm in eval uses running statistics (eps 1e-5). The released code uses
  SynchronizedBatchNorm, whose state-dict keys equal ``nn.BatchNorm*`` ones.
* Spectral norm (``torch.nn.utils.spectral_norm``): state dict stores ``weight_orig``,
  ``weight_u``, ``weight_v``. In EVAL mode torch does no power iteration: the forward
  uses ``W = weight_orig / sigma`` with ``sigma = u . (W_mat @ v)`` computed from the
  STORED ``u`` and ``v`` (``W_mat = weight_orig.reshape(out_channels, -1)``). A converter
  must bake exactly that ``W``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

__all__ = [
    "RELEASED_MODEL_PARAMS",
    "RELEASED_PARAMETER_COUNTS",
    "build_reference",
    "count_parameters",
    "forward_reference",
    "get_rotation_matrix",
    "headpose_pred_to_degree",
    "keypoint_transformation",
    "random_released_checkpoint",
    "tiny_model_params",
]

# model_params of config/mix-resolution.yml (the released 512x512 AdaSR model).
RELEASED_MODEL_PARAMS: dict = {
    "common_params": {
        "num_kp": 15,
        "image_channel": 3,
        "feature_channel": 32,
        "estimate_jacobian": False,
    },
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 32,
        "max_features": 1024,
        "scale_factor": 0.25,
        "num_blocks": 5,
        "reshape_channel": 16384,
        "reshape_depth": 16,
    },
    "he_estimator_params": {
        "block_expansion": 64,
        "max_features": 2048,
        "num_bins": 66,
    },
    "generator_params": {
        "block_expansion": 64,
        "max_features": 512,
        "num_down_blocks": 2,
        "reshape_channel": 32,
        "reshape_depth": 16,
        "num_resblocks": 6,
        "estimate_occlusion_map": True,
        "dense_motion_params": {
            "block_expansion": 32,
            "max_features": 1024,
            "num_blocks": 5,
            "reshape_depth": 16,
            "compress": 4,
        },
    },
    "discriminator_params": {
        "scales": [1],
        "block_expansion": 32,
        "max_features": 512,
        "num_blocks": 4,
        "sn": True,
    },
}

RELEASED_PARAMETER_COUNTS = {
    "generator": 100_988_176,
    "kp_detector": 41_940_047,
    "he_estimator": 30_254_838,
    "discriminator": 2_758_849,
}


def tiny_model_params() -> dict:
    """Small widths for fast tests at 64x64 input (same topology as the release).

    Shape constraints (all satisfied here):
      * kp: reshape_channel = reshape_depth * min(max_features, block_expansion * 2**num_blocks)
        and the input side after ``scale_factor`` must be divisible by 2**num_blocks.
      * generator: max_features == reshape_channel * reshape_depth,
        reshape_channel == common feature_channel (dense-motion compress input),
        dense_motion reshape_depth == generator reshape_depth,
        decoder ic == label_nc == block_expansion * 2**num_down_blocks.
      * he_estimator: ``stage_features`` (an extension; released is 256/512/1024/2048)
        must be divisible by 4; num_bins must stay 66 (degrees use a fixed 66-bin table).
    Keys ``decoder_params`` and ``stage_features`` are extensions absent from the yml.
    """
    return {
        "common_params": {
            "num_kp": 4,
            "image_channel": 3,
            "feature_channel": 8,
            "estimate_jacobian": False,
        },
        "kp_detector_params": {
            "temperature": 0.1,
            "block_expansion": 8,
            "max_features": 32,
            "scale_factor": 0.25,
            "num_blocks": 2,
            "reshape_channel": 128,  # 4 * min(32, 8 * 2**2)
            "reshape_depth": 4,
        },
        "he_estimator_params": {
            "block_expansion": 8,
            "max_features": 128,
            "num_bins": 66,
            "stage_features": (16, 32, 64, 128),
        },
        "generator_params": {
            "block_expansion": 8,
            "max_features": 32,  # 8 * 4
            "num_down_blocks": 2,
            "reshape_channel": 8,
            "reshape_depth": 4,
            "num_resblocks": 2,
            "estimate_occlusion_map": True,
            "dense_motion_params": {
                "block_expansion": 8,
                "max_features": 32,
                "num_blocks": 2,
                "reshape_depth": 4,
                "compress": 2,
            },
            "decoder_params": {"ic": 32, "oc": 16, "label_nc": 32, "spade_hidden": 16},
        },
        "discriminator_params": {
            "scales": [1],
            "block_expansion": 8,
            "max_features": 64,
            "num_blocks": 4,
            "sn": True,
        },
    }


# ----------------------------------------------------------------------------- grids


def make_coordinate_grid(spatial_size, dtype=torch.float32) -> torch.Tensor:
    """(D, H, W, 3) grid in [-1, 1] with last axis (x, y, z)."""
    d, h, w = spatial_size
    x = 2 * (torch.arange(w, dtype=dtype) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype) / (h - 1)) - 1
    z = 2 * (torch.arange(d, dtype=dtype) / (d - 1)) - 1
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def kp2gaussian(kp_value: torch.Tensor, spatial_size, kp_variance: float) -> torch.Tensor:
    """(B, K, 3) keypoints -> (B, K, D, H, W) unnormalised Gaussians."""
    grid = make_coordinate_grid(spatial_size, kp_value.dtype).to(kp_value.device)
    diff = grid[None, None] - kp_value[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)


# ----------------------------------------------------------------------------- blocks


class ResBottleneck(nn.Module):
    def __init__(self, in_features, stride):
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.norm2 = nn.BatchNorm2d(mid)
        self.norm3 = nn.BatchNorm2d(in_features)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features)

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN -> ReLU -> conv) x 2."""

    def __init__(self, in_features, kernel_size, padding):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features)
        self.norm2 = nn.BatchNorm2d(in_features)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block (BN -> ReLU -> conv) x 2."""

    def __init__(self, in_features, kernel_size, padding):
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size, padding=padding)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm3d(in_features)
        self.norm2 = nn.BatchNorm3d(in_features)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock3d(nn.Module):
    """Nearest upsample (1, 2, 2) -> conv -> BN -> ReLU."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x):
        out = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class DownBlock2d(nn.Module):
    """conv -> BN -> ReLU -> AvgPool2d(2)."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
    """conv (stride 1) -> BN -> ReLU -> AvgPool3d((1, 2, 2))."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU (or LeakyReLU with the default slope 0.01)."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1, lrelu=False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x):
        return self.ac(self.norm(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock3d(cin, cout))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x):
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            cin = mult * min(max_features, block_expansion * 2 ** (i + 1))
            cout = min(max_features, block_expansion * 2**i)
            blocks.append(UpBlock3d(cin, cout))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips):
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x):
        return self.decoder(self.encoder(x))


class KPHourglass(nn.Module):
    """2-D down path -> 1x1 conv -> reshape to 3-D -> 3-D up path (no skips)."""

    def __init__(
        self, block_expansion, in_features, reshape_features, reshape_depth, num_blocks=3,
        max_features=256,
    ):
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, cout))
        cin = min(max_features, block_expansion * 2**num_blocks)
        self.conv = nn.Conv2d(cin, reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        cout = cin
        for i in range(num_blocks):
            cin = min(max_features, block_expansion * 2 ** (num_blocks - i))
            cout = min(max_features, block_expansion * 2 ** (num_blocks - i - 1))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))
        self.reshape_depth = reshape_depth
        self.out_filters = cout

    def forward(self, x):
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)
        return self.up_blocks(out)


class AntiAliasInterpolation2d(nn.Module):
    """Depthwise Gaussian blur (zero pad) then strided subsampling."""

    def __init__(self, channels, scale):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        ksize = 2 * round(sigma * 4) + 1
        self.ka = ksize // 2
        self.kb = self.ka - 1 if ksize % 2 == 0 else self.ka
        coords = torch.arange(ksize, dtype=torch.float32)
        g = torch.exp(-((coords - (ksize - 1) / 2) ** 2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        kernel = kernel.view(1, 1, ksize, ksize).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", kernel)
        self.groups = channels
        self.scale = scale
        self.int_inv_scale = int(1 / scale)

    def forward(self, x):
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight, groups=self.groups)
        return out[:, :, :: self.int_inv_scale, :: self.int_inv_scale]


class SPADE(nn.Module):
    def __init__(self, norm_nc, label_nc, nhidden=128):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_nc, nhidden, kernel_size=3, padding=1), nn.ReLU()
        )
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x, segmap):
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE ResNet block with spectral-norm convs (norm_G 'spadespectralinstance')."""

    def __init__(self, fin, fout, label_nc, nhidden=128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, nhidden)
        self.norm_1 = SPADE(fmiddle, label_nc, nhidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, nhidden)

    def forward(self, x, seg):
        # shortcut: conv_s(norm_s(x)) with NO activation in between.
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


# ----------------------------------------------------------------------------- networks


class KPDetector(nn.Module):
    def __init__(
        self, block_expansion, feature_channel, num_kp, image_channel, max_features,
        reshape_channel, reshape_depth, num_blocks, temperature, estimate_jacobian=False,
        scale_factor=1, single_jacobian_map=False,
    ):
        super().__init__()
        self.predictor = KPHourglass(
            block_expansion, in_features=image_channel, max_features=max_features,
            reshape_features=reshape_channel, reshape_depth=reshape_depth, num_blocks=num_blocks,
        )
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv3d(
                self.predictor.out_filters, 9 * self.num_jacobian_maps, kernel_size=3, padding=1
            )
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(
                    torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 1] * self.num_jacobian_maps,
                                 dtype=torch.float32)
                )
        else:
            self.jacobian = None
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(image_channel, scale_factor)

    def forward(self, x):
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        prediction = self.kp(feature_map)
        b, k, d, h, w = prediction.shape
        heatmap = F.softmax(prediction.view(b, k, -1) / self.temperature, dim=2)
        heatmap = heatmap.view(b, k, d, h, w)
        grid = make_coordinate_grid((d, h, w), heatmap.dtype).to(heatmap.device)
        value = (heatmap[..., None] * grid[None, None]).sum(dim=(2, 3, 4))
        out = {"value": value}
        if self.jacobian is not None:
            jm = self.jacobian(feature_map).reshape(b, self.num_jacobian_maps, 9, d, h, w)
            jac = (heatmap.unsqueeze(2) * jm).view(b, k, 9, -1).sum(-1)
            out["jacobian"] = jac.view(b, k, 3, 3)
        return out


class HEEstimator(nn.Module):
    """ResNet-bottleneck trunk -> global average pool -> 5 linear heads.

    ``stage_features`` is an extension for tiny test configs; the release hard-codes
    (256, 512, 1024, 2048). Block counts (3, 1+3, 1+5, 1+2) are fixed.
    """

    def __init__(
        self, block_expansion, feature_channel, num_kp, image_channel, max_features,
        num_bins=66, estimate_jacobian=True, stage_features=(256, 512, 1024, 2048),
    ):
        super().__init__()
        f1, f2, f3, f4 = stage_features
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(block_expansion, f1, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(f1)
        self.block1 = nn.Sequential()
        for i in range(3):
            self.block1.add_module(f"b1_{i}", ResBottleneck(f1, stride=1))
        self.conv3 = nn.Conv2d(f1, f2, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(f2)
        self.block2 = ResBottleneck(f2, stride=2)
        self.block3 = nn.Sequential()
        for i in range(3):
            self.block3.add_module(f"b3_{i}", ResBottleneck(f2, stride=1))
        self.conv4 = nn.Conv2d(f2, f3, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(f3)
        self.block4 = ResBottleneck(f3, stride=2)
        self.block5 = nn.Sequential()
        for i in range(5):
            self.block5.add_module(f"b5_{i}", ResBottleneck(f3, stride=1))
        self.conv5 = nn.Conv2d(f3, f4, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(f4)
        self.block6 = ResBottleneck(f4, stride=2)
        self.block7 = nn.Sequential()
        for i in range(2):
            self.block7.add_module(f"b7_{i}", ResBottleneck(f4, stride=1))
        self.fc_roll = nn.Linear(f4, num_bins)
        self.fc_pitch = nn.Linear(f4, num_bins)
        self.fc_yaw = nn.Linear(f4, num_bins)
        self.fc_t = nn.Linear(f4, 3)
        self.fc_exp = nn.Linear(f4, 3 * num_kp)

    def forward(self, x):
        out = self.maxpool(F.relu(self.norm1(self.conv1(x))))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.block1(out)
        out = F.relu(self.norm3(self.conv3(out)))
        out = self.block3(self.block2(out))
        out = F.relu(self.norm4(self.conv4(out)))
        out = self.block5(self.block4(out))
        out = F.relu(self.norm5(self.conv5(out)))
        out = self.block7(self.block6(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        # NOTE the released name swap: fc_roll -> 'yaw', fc_yaw -> 'roll'.
        return {
            "yaw": self.fc_roll(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_yaw(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }


class DenseMotionNetwork(nn.Module):
    def __init__(
        self, block_expansion, num_blocks, max_features, num_kp, feature_channel, reshape_depth,
        compress, estimate_occlusion_map=False,
    ):
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion=block_expansion, in_features=(num_kp + 1) * (compress + 1),
            max_features=max_features, num_blocks=num_blocks,
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(
                self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3
            )
        else:
            self.occlusion = None
        self.num_kp = num_kp

    def create_sparse_motions(self, feature, kp_driving, kp_source):
        b, _, d, h, w = feature.shape
        identity = make_coordinate_grid((d, h, w), kp_source["value"].dtype)
        identity = identity.to(feature.device).view(1, 1, d, h, w, 3)
        coords = identity - kp_driving["value"].view(b, self.num_kp, 1, 1, 1, 3)
        if kp_driving.get("jacobian") is not None:
            jac = torch.matmul(kp_source["jacobian"], torch.inverse(kp_driving["jacobian"]))
            jac = jac[:, :, None, None, None]
            coords = torch.matmul(jac, coords.unsqueeze(-1)).squeeze(-1)
        driving_to_source = coords + kp_source["value"].view(b, self.num_kp, 1, 1, 1, 3)
        identity = identity.expand(b, 1, d, h, w, 3)
        return torch.cat([identity, driving_to_source], dim=1)  # (B, K+1, D, H, W, 3)

    def create_deformed_feature(self, feature, sparse_motions):
        b, c, d, h, w = feature.shape
        k1 = self.num_kp + 1
        rep = feature.unsqueeze(1).expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w)
        grid = sparse_motions.reshape(b * k1, d, h, w, 3)
        # released: F.grid_sample(feature_repeat, sparse_motions) -> align_corners=False
        out = F.grid_sample(rep, grid, align_corners=False)
        return out.view(b, k1, c, d, h, w)

    def create_heatmap_representations(self, feature, kp_driving, kp_source):
        spatial = feature.shape[3:]
        heat = kp2gaussian(kp_driving["value"], spatial, 0.01) - kp2gaussian(
            kp_source["value"], spatial, 0.01
        )
        zeros = torch.zeros_like(heat[:, :1])
        return torch.cat([zeros, heat], dim=1).unsqueeze(2)  # (B, K+1, 1, D, H, W)

    def forward(self, feature, kp_driving, kp_source):
        b, _, d, h, w = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))
        sparse_motion = self.create_sparse_motions(feature, kp_driving, kp_source)
        deformed = self.create_deformed_feature(feature, sparse_motion)
        heatmap = self.create_heatmap_representations(deformed, kp_driving, kp_source)
        inp = torch.cat([heatmap, deformed], dim=2).view(b, -1, d, h, w)
        prediction = self.hourglass(inp)
        mask = F.softmax(self.mask(prediction), dim=1)
        out = {"mask": mask}
        motion = sparse_motion.permute(0, 1, 5, 2, 3, 4)  # (B, K+1, 3, D, H, W)
        deformation = (motion * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 4, 1)
        out["deformation"] = deformation  # (B, D, H, W, 3)
        if self.occlusion is not None:
            pb, pc, pd, ph, pw = prediction.shape
            out["occlusion_map"] = torch.sigmoid(
                self.occlusion(prediction.reshape(pb, pc * pd, ph, pw))
            )
        return out


class SPADEDecoder(nn.Module):
    """Released decoder: ic=256, oc=64, label_nc=256, SPADE hidden 128 (hard-coded there)."""

    def __init__(self, ic=256, oc=64, label_nc=256, spade_hidden=128):
        super().__init__()
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)  # NOT spectral-normed
        for i in range(6):
            setattr(self, f"G_middle_{i}",
                    SPADEResnetBlock(2 * ic, 2 * ic, label_nc, spade_hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, label_nc, spade_hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, label_nc, spade_hidden)
        self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)  # nearest

    def forward(self, feature):
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(self.up(x), seg)
        x = self.up_1(self.up(x), seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.sigmoid(x)


class OcclusionAwareSPADEGenerator(nn.Module):
    def __init__(
        self, image_channel, feature_channel, num_kp, block_expansion, max_features,
        num_down_blocks, reshape_channel, reshape_depth, num_resblocks,
        estimate_occlusion_map=False, dense_motion_params=None, estimate_jacobian=False,
        decoder_params=None,
    ):
        super().__init__()
        if dense_motion_params is not None:
            self.dense_motion_network = DenseMotionNetwork(
                num_kp=num_kp, feature_channel=feature_channel,
                estimate_occlusion_map=estimate_occlusion_map, **dense_motion_params,
            )
        else:
            self.dense_motion_network = None
        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=3, padding=1)
        blocks = []
        cout = block_expansion
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock2d(cin, cout))
        self.down_blocks = nn.ModuleList(blocks)
        self.second = nn.Conv2d(cout, max_features, kernel_size=1)
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel, 3, 1))
        out_features = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, out_features, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        self.estimate_occlusion_map = estimate_occlusion_map
        self.image_channel = image_channel
        self.decoder = SPADEDecoder(**(decoder_params or {}))

    @staticmethod
    def deform_input(inp, deformation):
        _, d_old, h_old, w_old, _ = deformation.shape
        _, _, d, h, w = inp.shape
        if (d_old, h_old, w_old) != (d, h, w):
            deformation = deformation.permute(0, 4, 1, 2, 3)
            deformation = F.interpolate(
                deformation, size=(d, h, w), mode="trilinear", align_corners=False
            )
            deformation = deformation.permute(0, 2, 3, 4, 1)
        # released: F.grid_sample(inp, deformation) -> align_corners=False
        return F.grid_sample(inp, deformation, align_corners=False)

    def forward(self, source_image, kp_driving, kp_source, frame_idx=None):
        del frame_idx  # released signature carries it; unused.
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        feature_3d = out.view(b, self.reshape_channel, self.reshape_depth, h, w)
        feature_3d = self.resblocks_3d(feature_3d)
        output = {"feature_3d": feature_3d}
        if self.dense_motion_network is not None:
            dm = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
            output["mask"] = dm["mask"]
            occlusion_map = dm.get("occlusion_map")
            if occlusion_map is not None:
                output["occlusion_map"] = occlusion_map
            output["deformation"] = dm["deformation"]
            out = self.deform_input(feature_3d, dm["deformation"])
            b, c, d, h, w = out.shape
            out = self.fourth(self.third(out.view(b, c * d, h, w)))
            if occlusion_map is not None:
                if out.shape[2:] != occlusion_map.shape[2:]:
                    occlusion_map = F.interpolate(
                        occlusion_map, size=out.shape[2:], mode="bilinear", align_corners=False
                    )
                out = out * occlusion_map
        output["prediction"] = self.decoder(out)
        return output


class Discriminator(nn.Module):
    """Pix2pix patch discriminator: blocks conv(k4, no pad) [-> IN] -> lrelu(0.2) [-> pool]."""

    class _Down(nn.Module):
        def __init__(self, cin, cout, norm, pool, sn):
            super().__init__()
            conv = nn.Conv2d(cin, cout, kernel_size=4)
            self.conv = spectral_norm(conv) if sn else conv
            self.norm = nn.InstanceNorm2d(cout, affine=True) if norm else None
            self.pool = pool

        def forward(self, x):
            out = self.conv(x)
            if self.norm is not None:
                out = self.norm(out)
            out = F.leaky_relu(out, 0.2)
            if self.pool:
                out = F.avg_pool2d(out, (2, 2))
            return out

    def __init__(self, num_channels=3, block_expansion=64, num_blocks=4, max_features=512,
                 sn=False, **kwargs):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = num_channels if i == 0 else min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(self._Down(cin, cout, norm=i != 0, pool=i != num_blocks - 1, sn=sn))
        self.down_blocks = nn.ModuleList(blocks)
        conv = nn.Conv2d(cout, 1, kernel_size=1)
        self.conv = spectral_norm(conv) if sn else conv

    def forward(self, x):
        feature_maps = []
        out = x
        for block in self.down_blocks:
            out = block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, scales=(), **kwargs):
        super().__init__()
        self.scales = scales
        self.discs = nn.ModuleDict(
            {str(s).replace(".", "-"): Discriminator(**kwargs) for s in scales}
        )

    def forward(self, x: dict):
        """x: {'prediction_<scale>': image}; returns feature maps and prediction maps."""
        out = {}
        for key, disc in self.discs.items():
            scale = key.replace("-", ".")
            feature_maps, prediction_map = disc(x["prediction_" + scale])
            out["feature_maps_" + scale] = feature_maps
            out["prediction_map_" + scale] = prediction_map
        return out


# ----------------------------------------------------------------------------- API


def build_reference(params: dict) -> dict[str, nn.Module]:
    """Build the four released networks from a yml-like ``model_params`` dict."""
    params = copy.deepcopy(params)
    common = params["common_params"]
    return {
        "generator": OcclusionAwareSPADEGenerator(**params["generator_params"], **common),
        "kp_detector": KPDetector(**params["kp_detector_params"], **common),
        "he_estimator": HEEstimator(**params["he_estimator_params"], **common),
        "discriminator": MultiScaleDiscriminator(**params["discriminator_params"], **common),
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def headpose_pred_to_degree(pred: torch.Tensor) -> torch.Tensor:
    """66-bin logits -> degrees: softmax expectation * 3 - 99."""
    idx = torch.arange(pred.shape[1], dtype=pred.dtype, device=pred.device)
    return (F.softmax(pred, dim=1) * idx).sum(dim=1) * 3 - 99


def get_rotation_matrix(yaw, pitch, roll) -> torch.Tensor:
    """Degrees -> (B, 3, 3) = R_x(pitch) @ R_y(yaw) @ R_z(roll) (demo.py's active version)."""
    yaw = yaw / 180 * 3.14
    pitch = pitch / 180 * 3.14
    roll = roll / 180 * 3.14
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)
    pitch_mat = torch.stack([
        one, zero, zero,
        zero, torch.cos(pitch), -torch.sin(pitch),
        zero, torch.sin(pitch), torch.cos(pitch),
    ], dim=1).view(-1, 3, 3)
    yaw_mat = torch.stack([
        torch.cos(yaw), zero, torch.sin(yaw),
        zero, one, zero,
        -torch.sin(yaw), zero, torch.cos(yaw),
    ], dim=1).view(-1, 3, 3)
    roll_mat = torch.stack([
        torch.cos(roll), -torch.sin(roll), zero,
        torch.sin(roll), torch.cos(roll), zero,
        zero, zero, one,
    ], dim=1).view(-1, 3, 3)
    return torch.einsum("bij,bjk,bkm->bim", pitch_mat, yaw_mat, roll_mat)


def keypoint_transformation(kp_canonical: dict, he: dict) -> dict:
    """kp = R kp_canonical + t + exp (no jacobian: released estimate_jacobian is False)."""
    kp = kp_canonical["value"]
    yaw = headpose_pred_to_degree(he["yaw"])
    pitch = headpose_pred_to_degree(he["pitch"])
    roll = headpose_pred_to_degree(he["roll"])
    rot = get_rotation_matrix(yaw, pitch, roll)
    kp_rotated = torch.einsum("bmp,bkp->bkm", rot, kp)
    kp_t = kp_rotated + he["t"][:, None, :]
    value = kp_t + he["exp"].view(he["exp"].shape[0], -1, 3)
    jacobian = None
    if kp_canonical.get("jacobian") is not None:
        jacobian = torch.einsum("bmp,bkps->bkms", rot, kp_canonical["jacobian"])
    return {"value": value, "jacobian": jacobian, "yaw": yaw, "pitch": pitch, "roll": roll}


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


@torch.no_grad()
def forward_reference(nets: dict, source, driving) -> dict:
    """One (source, driving) pair through the released inference path, absolute motion.

    ``source`` / ``driving``: (B, 3, H, W) float in [0, 1] (torch tensor or numpy).
    Returns numpy arrays. yaw/pitch/roll/t/exp are the DRIVING head pose (the source ones
    are returned with a ``_source`` suffix).
    """
    for net in nets.values():
        net.eval()
    source = torch.as_tensor(np.asarray(source), dtype=torch.float32)
    driving = torch.as_tensor(np.asarray(driving), dtype=torch.float32)
    kp_canonical = nets["kp_detector"](source)
    he_source = nets["he_estimator"](source)
    he_driving = nets["he_estimator"](driving)
    kp_source = keypoint_transformation(kp_canonical, he_source)
    kp_driving = keypoint_transformation(kp_canonical, he_driving)
    gen = nets["generator"](source, kp_driving=kp_driving, kp_source=kp_source)
    out = {
        "kp_canonical": _np(kp_canonical["value"]),
        "yaw": _np(kp_driving["yaw"]),
        "pitch": _np(kp_driving["pitch"]),
        "roll": _np(kp_driving["roll"]),
        "t": _np(he_driving["t"]),
        "exp": _np(he_driving["exp"]),
        "yaw_source": _np(kp_source["yaw"]),
        "pitch_source": _np(kp_source["pitch"]),
        "roll_source": _np(kp_source["roll"]),
        "t_source": _np(he_source["t"]),
        "exp_source": _np(he_source["exp"]),
        "kp_source": _np(kp_source["value"]),
        "kp_driving": _np(kp_driving["value"]),
        "prediction": _np(gen["prediction"]),
        "feature_3d": _np(gen["feature_3d"]),
        "occlusion_map": _np(gen["occlusion_map"]),
        "mask": _np(gen["mask"]),
        "deformation": _np(gen["deformation"]),
    }
    if "discriminator" in nets:
        disc = nets["discriminator"]
        d_out = disc({f"prediction_{s}": gen["prediction"] for s in disc.scales})
        for key, val in d_out.items():
            if isinstance(val, list):
                for i, fm in enumerate(val):
                    out[f"disc_{key}_{i}"] = _np(fm)
            else:
                out[f"disc_{key}"] = _np(val)
    return out


def _power_iteration(w_mat: torch.Tensor, u: torch.Tensor, iters: int, eps: float = 1e-12):
    v = F.normalize(w_mat.t() @ u, dim=0, eps=eps)
    for _ in range(iters):
        v = F.normalize(w_mat.t() @ u, dim=0, eps=eps)
        u = F.normalize(w_mat @ v, dim=0, eps=eps)
    return u, v


@torch.no_grad()
def randomize_(
    nets: dict, seed: int = 0, power_iterations: int = 3, weight_gain: float = 1.0
) -> None:
    """Randomise every parameter and statistic in place (deterministic for ``seed``).

    * conv / linear weights ~ U(-a, a) with std ``weight_gain / sqrt(fan_in)``
      (gain > ~1.2 makes the 16-block HEEstimator trunk blow up with random BN stats),
      biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    * BatchNorm/InstanceNorm affine: weight ~ 1 + N(0, 0.1), bias ~ N(0, 0.1);
    * BatchNorm running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5);
    * spectral-norm u ~ normalised N(0, 1), then ``power_iterations`` power iterations
      on weight_orig to give v and a refined u (so sigma = u . W v > 0, like a trained
      checkpoint but NOT the exact top singular value).
    Buffers such as the anti-alias kernel (``kp_detector.down.weight``) are untouched.
    """
    gen = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=gen) * std

    for name in sorted(nets):
        for module in nets[name].modules():
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d)):
                if module.weight is not None:
                    module.weight.copy_(1 + normal(module.weight.shape, 0.1))
                    module.bias.copy_(normal(module.bias.shape, 0.1))
                if module.running_mean is not None:
                    module.running_mean.copy_(normal(module.running_mean.shape, 0.1))
                    module.running_var.copy_(
                        0.5 + torch.rand(module.running_var.shape, generator=gen)
                    )
                    module.num_batches_tracked.fill_(1000)
            elif isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                w = module.weight_orig if hasattr(module, "weight_orig") else module.weight
                fan_in = w[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                half_width = bound * math.sqrt(3) * weight_gain
                w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * half_width)
                if module.bias is not None:
                    module.bias.copy_((torch.rand(module.bias.shape, generator=gen) * 2 - 1)
                                      * bound)
                if hasattr(module, "weight_u"):
                    w_mat = module.weight_orig.reshape(module.weight_orig.shape[0], -1)
                    u = F.normalize(normal(module.weight_u.shape, 1.0), dim=0)
                    u, v = _power_iteration(w_mat, u, power_iterations)
                    module.weight_u.copy_(u)
                    module.weight_v.copy_(v)
                    # keep the derived .weight attribute consistent until the next forward
                    module.weight = module.weight_orig / torch.dot(u, w_mat @ v)


def random_released_checkpoint(nets: dict, path, seed: int = 0, **randomize_kwargs) -> dict:
    """Randomise ``nets`` in place and save them in the released ``.pth.tar`` layout.

    Layout: {'generator', 'kp_detector', 'he_estimator', 'discriminator': state dicts,
    'optimizer_generator', 'optimizer_kp_detector', 'optimizer_he_estimator',
    'optimizer_discriminator': Adam state dicts, 'epoch': 0}. Returns the saved dict.
    """
    randomize_(nets, seed=seed, **randomize_kwargs)
    for net in nets.values():
        net.eval()
    ckpt = {name: nets[name].state_dict() for name in
            ("generator", "kp_detector", "he_estimator", "discriminator")}
    for name in ("generator", "kp_detector", "he_estimator", "discriminator"):
        opt = torch.optim.Adam(nets[name].parameters(), lr=2e-4, betas=(0.5, 0.999))
        ckpt["optimizer_" + name] = opt.state_dict()
    ckpt["epoch"] = 0
    torch.save(ckpt, path)
    return ckpt
