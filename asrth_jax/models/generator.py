"""Appearance encoder, warp, and SPADE decoder (reference `OcclusionAwareSPADEGenerator`).

The generator is split so inference can encode a source once per video
(`encode_source`) and then decode every driving frame (`decode`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax.models import blocks
from asrth_jax.models.dense_motion import DenseMotionNetwork
from asrth_jax.models.warp import batched_grid_sample_3d


class SPADEDecoder(nnx.Module):
    """6 middle + 2 upsampling SPADE residual blocks, sigmoid RGB output."""

    def __init__(self, *, in_features=256, out_features=64, hidden=128, num_middle=6,
                 image_channel=3, rngs: nnx.Rngs, dtype=None):
        ic, oc = in_features, out_features
        kw = dict(rngs=rngs, dtype=dtype)
        self.fc = blocks.conv(ic, 2 * ic, 3, padding=1, **kw)
        for i in range(num_middle):
            block = blocks.SPADEResnetBlock(2 * ic, 2 * ic, ic, hidden, **kw)
            setattr(self, f"G_middle_{i}", block)
        self.up_0 = blocks.SPADEResnetBlock(2 * ic, ic, ic, hidden, **kw)
        self.up_1 = blocks.SPADEResnetBlock(ic, oc, ic, hidden, **kw)
        self.conv_img = blocks.conv(oc, image_channel, 3, padding=1, **kw)
        self.num_middle = num_middle

    def __call__(self, feature: jax.Array) -> jax.Array:
        seg = feature
        x = self.fc(feature)
        for i in range(self.num_middle):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(blocks.upsample_nearest(x), seg)
        x = self.up_1(blocks.upsample_nearest(x), seg)
        x = self.conv_img(nnx.leaky_relu(x, 0.2))
        return jax.nn.sigmoid(x.astype(jnp.float32))


def check_num_down_blocks(num_down_blocks: int) -> None:
    if num_down_blocks != 2:
        raise ValueError(f"config.model.generator.num_down_blocks must be 2 (the decoder's "
                         f"two upsampling blocks undo it), got {num_down_blocks}")


class OcclusionAwareSPADEGenerator(nnx.Module):
    def __init__(self, *, image_channel, feature_channel, num_kp, block_expansion,
                 max_features, num_down_blocks, reshape_channel, reshape_depth,
                 num_resblocks, estimate_occlusion_map, dense_motion_params,
                 decoder_out_features=64, decoder_hidden=128, decoder_middle_blocks=6,
                 remat=False,
                 rngs: nnx.Rngs, dtype=None):
        check_num_down_blocks(num_down_blocks)
        kw = dict(rngs=rngs, dtype=dtype)
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp, feature_channel=feature_channel,
            estimate_occlusion_map=estimate_occlusion_map, remat=remat, **dense_motion_params,
            **kw)
        self.first = blocks.SameBlock2d(image_channel, block_expansion, 3, 1, **kw)
        down = []
        for i in range(num_down_blocks):
            fin = min(max_features, block_expansion * 2**i)
            fout = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(blocks.DownBlock2d(fin, fout, **kw))
        self.down_blocks = nnx.List(down)
        self.second = blocks.conv(fout, max_features, 1, **kw)
        self.reshape_depth = reshape_depth
        self.resblocks_3d = nnx.List(
            [blocks.ResBlock(reshape_channel, ndim=3, **kw) for _ in range(num_resblocks)])
        out_features = block_expansion * 2**num_down_blocks
        self.third = blocks.SameBlock2d(max_features, out_features, 3, 1, lrelu=True, **kw)
        self.fourth = blocks.conv(out_features, out_features, 1, **kw)
        self.decoder = SPADEDecoder(in_features=out_features, out_features=decoder_out_features,
                                    hidden=decoder_hidden, num_middle=decoder_middle_blocks,
                                    image_channel=image_channel, **kw)
        self.remat = remat

    def encode_source(self, source_image: jax.Array) -> jax.Array:
        """(B, H, W, 3) image -> (B, D, H/4, W/4, C) appearance feature volume."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        feature = blocks.channels_to_depth(self.second(out), self.reshape_depth)
        for block in self.resblocks_3d:
            feature = block(feature)
        return feature

    def decode(self, feature_3d: jax.Array, kp_driving: jax.Array,
               kp_source: jax.Array) -> dict[str, jax.Array]:
        """Warp the source volume to the driving keypoints and render the frame."""
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        warped = batched_grid_sample_3d(feature_3d,
                                        motion["deformation"].astype(feature_3d.dtype))
        out = self.fourth(self.third(blocks.depth_to_channels(warped)))
        if "occlusion_map" in motion:
            out = out * motion["occlusion_map"].astype(out.dtype)
        decoder = self.decoder
        if self.remat:
            prediction = nnx.remat(lambda mdl, x: mdl(x))(decoder, out)
        else:
            prediction = decoder(out)
        result = dict(motion)
        result["prediction"] = prediction
        return result

    def __call__(self, source_image, kp_driving, kp_source):
        return self.decode(self.encode_source(source_image), kp_driving, kp_source)
