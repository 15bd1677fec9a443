"""Appearance encoder, warp, and SPADE decoder (reference `OcclusionAwareSPADEGenerator`).

The generator is split so inference can encode a source once per video
(`encode_source`) and then decode every driving frame (`decode`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asrth_jax.errors import ConfigError
from asrth_jax.models import blocks
from asrth_jax.models.dense_motion import DenseMotionNetwork
from asrth_jax.models.warp import batched_grid_sample_3d


class SPADEDecoder(nnx.Module):
    """Middle and 2x-upsampling SPADE residual blocks, sigmoid RGB output.

    The release has 6 middle and 2 upsampling blocks (`up_0`: 2C -> C, `up_1`: C -> out).
    With one upsampling block `up_0` goes 2C -> out; with more, the extra ones keep C.
    """

    def __init__(self, *, in_features=256, out_features=64, hidden=128, num_middle=6,
                 num_up=2, image_channel=3, rngs: nnx.Rngs, dtype=None):
        ic, oc = in_features, out_features
        kw = dict(rngs=rngs, dtype=dtype)
        self.fc = blocks.conv(ic, 2 * ic, 3, padding=1, **kw)
        for i in range(num_middle):
            block = blocks.SPADEResnetBlock(2 * ic, 2 * ic, ic, hidden, **kw)
            setattr(self, f"G_middle_{i}", block)
        for i in range(num_up):
            fin = 2 * ic if i == 0 else ic
            fout = oc if i == num_up - 1 else ic
            setattr(self, f"up_{i}", blocks.SPADEResnetBlock(fin, fout, ic, hidden, **kw))
        self.conv_img = blocks.conv(oc, image_channel, 3, padding=1, **kw)
        self.num_middle = num_middle
        self.num_up = num_up

    def __call__(self, feature: jax.Array) -> jax.Array:
        seg = feature
        x = self.fc(feature)
        for i in range(self.num_middle):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        for i in range(self.num_up):
            x = getattr(self, f"up_{i}")(blocks.upsample_nearest(x), seg)
        x = self.conv_img(nnx.leaky_relu(x, 0.2))
        return jax.nn.sigmoid(x.astype(jnp.float32))


def check_num_down_blocks(num_down_blocks: int) -> None:
    if num_down_blocks < 1:
        raise ConfigError(f"config.model.generator.num_down_blocks must be at least 1 (the "
                          f"decoder upsamples once per block), got {num_down_blocks}")


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
                                    num_up=num_down_blocks, image_channel=image_channel, **kw)
        self.remat = remat

    def encode_source(self, source_image: jax.Array) -> jax.Array:
        """(B, H, W, 3) image -> (B, D, H/s, W/s, C) volume, s = 2**num_down_blocks."""
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
