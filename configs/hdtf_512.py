"""The released AdaSR model at 512x512 on HDTF, with the reference's training recipe
(`config/mix-resolution.yml`): identity sampling with 5 repeats, batch 4, 200 epochs,
lr x0.1 after epoch 16, VGG19 and HopeNet teachers (convert them first:
`python -m asrth_jax.convert --vgg19 FILE --out weights` and `--hopenet FILE`).
"""

from asrth_jax import config_lib


def get_config():
    c = config_lib.base_config()
    c.image_size = 512
    c.data.kind = "tfds"
    c.data.tfds_dir = "data/hdtf_512"
    c.data.id_sampling = True
    c.data.num_repeats = 5
    c.train.global_batch_size = 4
    c.train.num_epochs = 200
    c.optim.decay_epochs = (16,)
    c.loss.vgg19_weights = "weights/vgg19.npz"
    c.loss.hopenet_weights = "weights/hopenet.npz"
    return config_lib.finalize(c)
