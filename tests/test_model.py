"""The seed CNN, layer for layer, and its save -> load round trip. CPU only, random weights."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cifar_model import CIFAR_MEAN, CIFAR_STD, CLASSES, IMAGE_SIZE, Classifier, CifarCNN, count_parameters, normalize
from cifar_model.weights import check_config

pytestmark = pytest.mark.timeout(60)

N = 4  # batch size: more than one, so a batch-mixing bug would show
# Every module of the seed network in order, its settings, and the shape it outputs for an
# N x 3 x 32 x 32 batch: the specification the model must match, written out independently of it.
# (kind, settings, output shape without the batch dimension)
SEED = [
    ("conv", dict(cin=3, cout=64, padding=1), (64, 32, 32)),
    ("bn", dict(features=64), (64, 32, 32)),
    ("relu", {}, (64, 32, 32)),
    ("pool", {}, (64, 16, 16)),
    ("conv", dict(cin=64, cout=128, padding=1), (128, 16, 16)),
    ("bn", dict(features=128), (128, 16, 16)),
    ("relu", {}, (128, 16, 16)),
    ("conv", dict(cin=128, cout=256, padding=1), (256, 16, 16)),
    ("bn", dict(features=256), (256, 16, 16)),
    ("relu", {}, (256, 16, 16)),
    ("pool", {}, (256, 8, 8)),
    ("conv", dict(cin=256, cout=256, padding=1), (256, 8, 8)),
    ("bn", dict(features=256), (256, 8, 8)),
    ("relu", {}, (256, 8, 8)),
    ("conv", dict(cin=256, cout=256, padding=0), (256, 6, 6)),  # no padding: 8 -> 6
    ("bn", dict(features=256), (256, 6, 6)),
    ("relu", {}, (256, 6, 6)),
    ("pool", {}, (256, 3, 3)),
    ("conv", dict(cin=256, cout=256, padding=0), (256, 1, 1)),  # no padding: 3 -> 1
    ("relu", {}, (256, 1, 1)),  # no BN after the last convolution
    ("flatten", {}, (256,)),
    ("linear", dict(fin=256, fout=256), (256,)),
    ("relu", {}, (256,)),
    ("dropout", {}, (256,)),
    ("linear", dict(fin=256, fout=10), (10,)),
]
KINDS = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "relu": nn.ReLU, "pool": nn.MaxPool2d,
         "flatten": nn.Flatten, "linear": nn.Linear, "dropout": nn.Dropout}


@pytest.fixture(scope="module")
def model() -> CifarCNN:
    torch.manual_seed(0)
    return CifarCNN().eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(N, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


def layers(model: CifarCNN) -> list[nn.Module]:
    """The network's leaf modules in forward order (features, then classifier)."""
    return [*model.features, *model.classifier]


def randomize_batch_norm(model: nn.Module, seed: int = 2) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, as training would, so that
    folding BN into the convolutions (what Classifier does) changes the arithmetic for real."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_layers_are_the_seed_network(model):
    mods = layers(model)
    assert [type(m) for m in mods] == [KINDS[kind] for kind, _, _ in SEED]
    for m, (kind, cfg, _) in zip(mods, SEED):
        if kind == "conv":
            assert (m.in_channels, m.out_channels, m.padding) == (cfg["cin"], cfg["cout"], (cfg["padding"],) * 2)
            assert (m.kernel_size, m.stride, m.bias is not None) == ((3, 3), (1, 1), True)
        elif kind == "bn":
            assert m.num_features == cfg["features"]
        elif kind == "pool":
            assert (m.kernel_size, m.stride) == (2, 2)
        elif kind == "linear":
            assert (m.in_features, m.out_features) == (cfg["fin"], cfg["fout"])


def test_layer_counts_and_parameters(model):
    count = {k: sum(isinstance(m, t) for m in model.modules()) for k, t in KINDS.items()}
    assert (count["conv"], count["bn"], count["pool"], count["linear"]) == (6, 5, 3, 2)
    assert count_parameters(model) == 2_211_338
    assert sum(p.numel() for p in model.parameters()) == 2_211_338  # nothing frozen either


def test_every_intermediate_shape(model, batch):
    seen: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape))) for m in layers(model)]
    try:
        with torch.no_grad():
            logits = model(batch)
    finally:
        for h in hooks:
            h.remove()
    assert seen == [(N, *shape) for _, _, shape in SEED]
    assert logits.shape == (N, len(CLASSES))
    # Grad-CAM hooks the ReLU after the last convolution that keeps a spatial map (6x6).
    assert seen[CifarCNN.CAM_LAYER] == (N, 256, 6, 6)


@pytest.mark.parametrize("train", [False, True])
def test_outputs_are_finite(train, batch):
    torch.manual_seed(3)
    net = CifarCNN().train(train)
    out = net(batch)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if train:  # gradients reach every parameter and are finite
        out.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_eval_is_deterministic_and_dropout_is_train_only(model, batch):
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))
        model.train()
        try:
            torch.manual_seed(4)
            a = model.classifier(model.features(batch))
            b = model.classifier(model.features(batch))
        finally:
            model.eval()
    assert not torch.equal(a, b)  # dropout is active in training only


def test_config_carries_what_inference_needs(tmp_path):
    CifarCNN().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["classes"] == list(CLASSES)
    assert config["image_size"] == IMAGE_SIZE == 32
    assert config["mean"] == pytest.approx(list(CIFAR_MEAN))
    assert config["std"] == pytest.approx(list(CIFAR_STD))
    assert config["temperature"] == 1.0 and config["dropout"] == 0.3
    assert check_config(config) == {k: config[k] for k in ("classes", "mean", "std", "image_size", "dropout",
                                                           "temperature", "unfamiliar_below")}  # what loading accepts
    assert (tmp_path / "model.safetensors").is_file()


def test_save_load_round_trip_gives_the_same_logits(tmp_path):
    torch.manual_seed(5)
    model = CifarCNN()
    randomize_batch_norm(model)
    model.eval().save_pretrained(tmp_path)
    clf = Classifier.from_pretrained(tmp_path, precision="fp32")  # bf16: tests/test_weights.py
    clf.tta = False

    # The tensors themselves come back bit for bit.
    loaded = clf.model.state_dict()
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())

    pixels = torch.randint(0, 256, (8, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = model(normalize(pixels, model.mean, model.std))
    got = clf.logits(pixels)
    # Not bit-exact: Classifier runs a copy with each BatchNorm folded into its convolution
    # (w * gamma / sqrt(var + eps): other roundings) in channels-last layout (other convolution
    # kernels, other summation order). Float32 differences of that kind are around 1e-6.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()


def test_flip_tta_averages_the_mirror_image(model):
    clf = Classifier(model, precision="fp32")  # tta on by default
    pixels = torch.randint(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        x = normalize(pixels)
        expected = (model(x) + model(x.flip(-1))) / 2
    torch.testing.assert_close(clf.logits(pixels), expected, rtol=1e-4, atol=1e-4)


# --- what a network carries besides its weights -----------------------------------------------------


KNOTS = [[0.2, 0.25], [0.6, 0.5], [0.95, 0.9]]


def test_an_uncalibrated_network_gives_the_plain_softmax():
    clf = Classifier(CifarCNN(), precision="fp32")  # built here: mutmut links a test to what it calls itself
    z = torch.randn(4, 10, generator=torch.Generator().manual_seed(3)) * 4
    torch.testing.assert_close(clf.calibrate(z), torch.softmax(z, dim=1))
    assert not clf.unfamiliar(z).any()
    from PIL import Image

    assert clf.to_uint8(Image.new("RGB", (50, 40))).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


def test_a_network_keeps_the_calibration_it_is_built_with(tmp_path):
    from cifar_model.calibration import is_unfamiliar, to_probabilities

    net = CifarCNN(temperature=0.7, top_label_map=KNOTS, unfamiliar_below=3.0)
    clf = Classifier(net, precision="fp32")
    z = torch.randn(50, 10, generator=torch.Generator().manual_seed(4)) * 3
    torch.testing.assert_close(clf.calibrate(z), to_probabilities(z, 0.7, top_label_map=KNOTS))
    assert torch.equal(clf.unfamiliar(z), is_unfamiliar(z, 3.0)) and 0 < int(clf.unfamiliar(z).sum()) < 50


def test_set_calibration_is_kept_and_saved_with_the_weights(tmp_path):
    from cifar_model.weights import load

    net = CifarCNN()
    net.set_calibration(0.5, KNOTS, 2.5)
    assert (net.temperature, net.top_label_map, net.unfamiliar_below) == (0.5, KNOTS, 2.5)
    net.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["temperature"], saved["top_label_map"], saved["unfamiliar_below"]) == (0.5, KNOTS, 2.5)
    loaded, _ = load(tmp_path)
    assert (loaded.temperature, loaded.top_label_map, loaded.unfamiliar_below) == (0.5, KNOTS, 2.5)
    net.set_calibration(2)  # a temperature alone: no map, no unsure rule
    assert (net.temperature, net.top_label_map, net.unfamiliar_below) == (2.0, None, None)
    assert isinstance(net.temperature, float)


def test_only_32x32_input_is_accepted_saying_so():
    with pytest.raises(ValueError) as err:
        CifarCNN(image_size=64)
    assert str(err.value) == "the seed network takes 32x32 input, not 64"
