"""The same model family at 256x256 for VoxCeleb (FOMM layout, prepared to TFDS), with
the face-vid2vid VoxCeleb recipe: identity sampling with 75 repeats, batch 32, 300
epochs, lr x0.1 after epoch 180, VGG19 and HopeNet teachers.

    python -m asrth_jax.convert --vgg19 vgg19-dcbb9e9d.pth --out weights
    python -m asrth_jax.convert --hopenet hopenet_robust_alpha1.pkl --out weights
    python -m data_pipelines.prepare --videos VOX_ROOT --out data/vox_256 --size 256
    python -m asrth_jax.train --config configs/vox.py --workdir runs/vox
"""

from asrth_jax import config_lib


def get_config():
    c = config_lib.base_config()
    c.image_size = 256
    c.data.kind = "tfds"
    c.data.tfds_dir = "data/vox_256"
    c.data.id_sampling = True
    c.data.num_repeats = 75
    c.train.global_batch_size = 32
    c.train.num_epochs = 300
    c.optim.decay_epochs = (180,)
    c.loss.vgg19_weights = "weights/vgg19.npz"
    c.loss.hopenet_weights = "weights/hopenet.npz"
    return config_lib.finalize(c)
