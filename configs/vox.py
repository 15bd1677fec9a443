"""The same model family at 256x256 for VoxCeleb (FOMM layout, prepared to TFDS).

    python -m data_pipelines.prepare --videos VOX_ROOT --out data/vox_256 --size 256
    python -m asrth_jax.train --config configs/vox.py --workdir runs/vox
"""

from asrth_jax import config_lib


def get_config():
    c = config_lib.base_config()
    c.image_size = 256
    c.data.kind = "tfds"
    c.data.tfds_dir = "data/vox_256"
    c.train.global_batch_size = 16
    return config_lib.finalize(c)
