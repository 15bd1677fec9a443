"""HopeNet: parity with a torch Hopenet (random weights), conversion checks, preprocessing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asrth_jax.models import hopenet

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional


class _TorchBottleneck(nn.Module):
    # torchvision.models.resnet.Bottleneck (torchvision is not installed here).
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(out + x)


class _TorchHopenet(nn.Module):
    # deep-head-pose Hopenet layout (incl. the vestigial fc_finetune).
    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, 2)
        self.layer3 = self._make_layer(256, 6, 2)
        self.layer4 = self._make_layer(512, 3, 2)
        self.avgpool = nn.AvgPool2d(7)
        self.fc_yaw = nn.Linear(2048, 66)
        self.fc_pitch = nn.Linear(2048, 66)
        self.fc_roll = nn.Linear(2048, 66)
        self.fc_finetune = nn.Linear(2048 + 3, 3)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [_TorchBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [_TorchBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x).flatten(1)
        return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    model = _TorchHopenet()
    # Non-trivial BN statistics/affines so a scale/mean/var mix-up cannot pass.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def test_matches_torch_and_file_roundtrip(torch_model, tmp_path):
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save(torch_model.state_dict(), path)
    # A non-.npz --out is a directory that receives hopenet.npz.
    written = hopenet.convert_hopenet_file(path, tmp_path / "weights")
    assert written == str(tmp_path / "weights" / "hopenet.npz")
    ours = hopenet.load_hopenet_npz(written)

    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2))
    got = nnx_jit_forward(ours, jnp.asarray(x))
    for name, w in zip(("yaw", "pitch", "roll"), want, strict=True):
        w = w.numpy()
        assert got[name].shape == (1, 66)
        np.testing.assert_allclose(np.asarray(got[name]), w, atol=1e-4 * max(1, np.abs(w).max()))


def nnx_jit_forward(model, x):
    # One jit of the whole net compiles faster than ~200 eager op dispatches.
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)


def test_state_dict_problems_reported_together(torch_model):
    sd = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    del sd["layer2.0.downsample.1.running_var"]
    sd["layer3.1.conv2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    sd["fc_extra.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError) as err:
        hopenet.hopenet_from_torch_state_dict(sd)
    message = str(err.value)
    assert "unexpected fc_extra.weight" in message
    assert "missing layer2/0/downsample_bn/var" in message
    assert "shape layer3/1/conv2/kernel" in message


def test_preprocess_matches_torch_bilinear():
    rng = np.random.default_rng(1)
    for size in (256, 96):  # downsample and upsample
        images = rng.random((1, size, size, 3), dtype=np.float32)
        got = np.asarray(hopenet.hopenet_preprocess(jnp.asarray(images)))
        t = F.interpolate(
            torch.from_numpy(images).permute(0, 3, 1, 2),
            size=(224, 224),
            mode="bilinear",
            align_corners=False,
        )
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        want = ((t - mean) / std).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_rejects_wrong_input_size():
    model = nnx.eval_shape(hopenet.make_hopenet)
    with pytest.raises(ValueError, match="224"):
        nnx.eval_shape(lambda m: m(jnp.zeros((1, 128, 128, 3))), model)
