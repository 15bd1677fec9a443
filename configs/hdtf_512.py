"""The released AdaSR model at 512x512 on HDTF (reference `mix-resolution.yml`)."""

from asrth_jax import config_lib


def get_config():
    c = config_lib.base_config()
    c.image_size = 512
    c.data.kind = "tfds"
    c.data.tfds_dir = "data/hdtf_512"
    c.train.global_batch_size = 4
    return config_lib.finalize(c)
