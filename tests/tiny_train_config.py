"""The smallest training config that still runs every loss: tests compile it in
seconds rather than minutes (XLA compile time grows with the number of ops)."""

from asrth_jax import config_lib

TEST_MODEL = {
    "common": {"num_kp": 4, "feature_channel": 4},
    "kp_detector": {"block_expansion": 4, "max_features": 16, "scale_factor": 0.5,
                    "num_blocks": 2, "reshape_channel": 32, "reshape_depth": 2},
    "he_estimator": {"block_expansion": 4, "stage_features": (8, 8, 16, 16),
                     "stage_blocks": (1, 1, 1, 1)},
    "generator": {"block_expansion": 4, "max_features": 16, "reshape_channel": 4,
                  "reshape_depth": 4, "num_resblocks": 1, "decoder_out_features": 4,
                  "decoder_hidden": 4, "decoder_middle_blocks": 1,
                  "dense_motion": {"block_expansion": 4, "max_features": 16, "num_blocks": 2,
                                   "reshape_depth": 4, "compress": 1}},
    "discriminator": {"block_expansion": 4, "max_features": 16, "num_blocks": 2},
}


def get_config():
    c = config_lib.base_config()
    c.image_size = 32
    c.model = config_lib.model_config(TEST_MODEL)
    c.data.kind = "synthetic"
    c.data.synthetic.num_train_identities = 8
    c.data.synthetic.num_test_identities = 2
    c.data.synthetic.frames_per_video = 8
    c.train.global_batch_size = 8
    c.train.num_steps = 4
    # Flax's initialisation, as the demo: the tests check motion after a step or two, and
    # with PyTorch's default init this 4-channel network rendered the driven and the
    # no-motion frames alike (equal L1 in test_train_sharding). The paper configs' init
    # is tested in tests/test_torch_init.py.
    c.train.init = "flax"
    c.train.batchnorm_running_var = "biased"
    c.loss.perceptual_scales = (1.0,)
    c.loss.perceptual_network = "lpips_vgg16"  # bundled weights, no teacher file
    # The true synthetic pose teaches the head-pose estimator, so every sharding and
    # multi-process test also carries a per-example label beside the images.
    c.loss.headpose_teacher = "data"
    c.loss.head_translation = 1.0
    c.loss.landmark_keypoints = 1.0
    c.checkpoint.every_steps = 2
    c.eval.every_steps = 0
    c.eval.num_videos = 2
    c.eval.max_frames = 4
    c.log.scalars_every_steps = 1
    c.log.images_every_steps = 1000
    c.log.profile_steps = 0
    return config_lib.finalize(c)
