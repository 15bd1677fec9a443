"""The paper configs start from PyTorch's default initialisation, drawn on the host, and
BatchNorm keeps PyTorch's unbiased running variance."""

import math

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from asrth_jax.config_lib import load_config_file
from asrth_jax.models import adasr, blocks, torch_init


def _layers(module: nnx.Module):
    for path, child in nnx.iter_modules(module):
        if isinstance(child, (nnx.Conv, nnx.Linear, blocks.SpectralConv2d)):
            yield "/".join(map(str, path)), child


def _torch_bound(kernel_shape: tuple[int, ...]) -> float:
    """The bound PyTorch's own layer of that shape draws from: weights of nn.Linear /
    nn.Conv*d are U(+-b) with b from kaiming_uniform(a=sqrt(5)), i.e. 1/sqrt(fan_in)."""
    *spatial, fan_in_channels, _ = kernel_shape
    fan_in = fan_in_channels * math.prod(spatial)
    return 1.0 / math.sqrt(fan_in)


def test_torch_formula_is_pytorchs_own():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(64, 256, 3)
    bound = _torch_bound((3, 3, 64, 256))
    assert layer.weight.detach().abs().max() <= bound
    assert layer.weight.detach().std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert layer.bias.detach().abs().max() <= bound


@pytest.fixture(scope="module")
def vox_networks():
    config = load_config_file("configs/vox.py")
    assert config.train.init == "pytorch"
    return (adasr.build_generator(config.model, seed=0, init=config.train.init),
            adasr.build_discriminator(config.model, seed=0, init=config.train.init))


def test_paper_config_weights_have_pytorchs_per_layer_statistics(vox_networks):
    checked = 0
    for network in vox_networks:
        for name, layer in _layers(network):
            kernel = np.asarray(layer.kernel[...])
            bound = _torch_bound(kernel.shape)
            assert np.abs(kernel).max() <= bound, name
            if kernel.size >= 1000:
                assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.05), name
                assert abs(kernel.mean()) < 0.05 * bound, name
                checked += 1
            if layer.bias is not None:
                bias = np.asarray(layer.bias[...])
                assert np.abs(bias).max() <= bound, name
                if bias.size >= 500:
                    assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.05), name
    assert checked > 150


def test_head_pose_heads_start_as_pytorchs_linear_not_zero(vox_networks):
    he = vox_networks[0].he_estimator
    for head in (he.fc_yaw, he.fc_pitch, he.fc_roll, he.fc_t, he.fc_exp):
        kernel = np.asarray(head.kernel[...])
        bound = 1 / math.sqrt(kernel.shape[0])
        assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert np.abs(np.asarray(head.bias[...])).max() > 0


def test_norms_and_spectral_vectors_start_as_pytorchs(vox_networks):
    gen, disc = vox_networks
    for _, child in nnx.iter_modules(gen):
        if isinstance(child, nnx.BatchNorm):
            assert (np.asarray(child.scale[...]) == 1).all()
            assert (np.asarray(child.bias[...]) == 0).all()
            assert (np.asarray(child.mean[...]) == 0).all()
            assert (np.asarray(child.var[...]) == 1).all()
    for _, child in nnx.iter_modules(disc):
        if isinstance(child, blocks.SpectralConv2d):
            for vector in (child.u[...], child.v[...]):
                assert np.linalg.norm(np.asarray(vector)) == pytest.approx(1.0, rel=1e-5)


def test_host_draws_depend_on_seed_and_path_only():
    config = load_config_file("tests/tiny_train_config.py")
    first = nnx.state(adasr.build_generator(config.model, seed=3))
    again = nnx.state(adasr.build_generator(config.model, seed=3))
    other = nnx.state(adasr.build_generator(config.model, seed=4))
    same = jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), first, again)
    assert all(jax.tree.leaves(same))
    kernel = ("kp_detector", "kp")
    a = np.asarray(first[kernel[0]][kernel[1]]["kernel"][...])
    b = np.asarray(other[kernel[0]][kernel[1]]["kernel"][...])
    assert not np.array_equal(a, b)


def test_a_variable_without_a_pytorch_rule_is_refused():
    class Odd(nnx.Module):
        def __init__(self):
            self.weight = nnx.Param(np.zeros((3,), np.float32))

    with pytest.raises(torch_init.UncoveredVariableError, match="Odd.weight"):
        torch_init.torch_default_state(Odd(), 0, "odd")


@pytest.mark.parametrize("kind", ["unbiased", "biased"])
def test_batchnorm_running_variance_follows_the_config(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(2, 5, 5, 4)).astype(np.float32)
    ours = blocks.batch_norm(4, rngs=nnx.Rngs(0))
    ours.train()
    blocks.set_running_variance(ours, kind)
    y = ours(x)
    reference = torch.nn.BatchNorm2d(4)  # momentum 0.1 == our 0.9
    reference.train()
    expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(y), expected.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(ours.mean[...]), reference.running_mean.numpy(),
                               rtol=1e-5)
    running_var = reference.running_var.numpy()
    if kind == "biased":  # PyTorch's is unbiased: undo its n/(n-1)
        n = x.size // 4
        running_var = 0.9 + (running_var - 0.9) * (n - 1) / n
    np.testing.assert_allclose(np.asarray(ours.var[...]), running_var, rtol=1e-5)


def test_unknown_running_variance_is_a_config_error():
    with pytest.raises(ValueError, match="batchnorm_running_var"):
        blocks.set_running_variance(blocks.batch_norm(4, rngs=nnx.Rngs(0)), "odd")
