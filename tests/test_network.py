"""The seed CNN (cifar_model/model.py), layer for layer, against a specification written out here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifar_model import CIFAR_MEAN, CIFAR_STD, CLASSES, IMAGE_SIZE, CifarCNN, count_parameters

N = 4  # more than one picture, so a bug mixing a batch would show
# (kind, settings, output shape without the batch dimension) for every module, in forward order.
SEED = [
    ("conv", (3, 64, 1), (64, 32, 32)), ("bn", 64, (64, 32, 32)), ("relu", None, (64, 32, 32)),
    ("pool", None, (64, 16, 16)),
    ("conv", (64, 128, 1), (128, 16, 16)), ("bn", 128, (128, 16, 16)), ("relu", None, (128, 16, 16)),
    ("conv", (128, 256, 1), (256, 16, 16)), ("bn", 256, (256, 16, 16)), ("relu", None, (256, 16, 16)),
    ("pool", None, (256, 8, 8)),
    ("conv", (256, 256, 1), (256, 8, 8)), ("bn", 256, (256, 8, 8)), ("relu", None, (256, 8, 8)),
    ("conv", (256, 256, 0), (256, 6, 6)), ("bn", 256, (256, 6, 6)), ("relu", None, (256, 6, 6)),  # 8 -> 6
    ("pool", None, (256, 3, 3)),
    ("conv", (256, 256, 0), (256, 1, 1)), ("relu", None, (256, 1, 1)),  # 3 -> 1, no BN
    ("flatten", None, (256,)), ("linear", (256, 256), (256,)), ("relu", None, (256,)), ("dropout", None, (256,)),
    ("linear", (256, 10), (10,)),
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


def _layers(model: CifarCNN) -> list[nn.Module]:
    return [*model.features, *model.classifier]


def test_constants_are_cifar10s():
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert (CIFAR_MEAN, CIFAR_STD, IMAGE_SIZE) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32)


def test_layers_are_the_seed_network(model):
    mods = _layers(model)
    assert [type(m) for m in mods] == [KINDS[kind] for kind, _, _ in SEED]
    for m, (kind, cfg, _) in zip(mods, SEED):
        if kind == "conv":
            assert (m.in_channels, m.out_channels, m.padding) == (cfg[0], cfg[1], (cfg[2],) * 2)
            assert (m.kernel_size, m.stride, m.bias is not None) == ((3, 3), (1, 1), True)
        elif kind == "bn":
            assert m.num_features == cfg
        elif kind == "pool":
            assert (m.kernel_size, m.stride) == (2, 2)
        elif kind == "linear":
            assert (m.in_features, m.out_features) == cfg
        elif kind == "relu":
            assert m.inplace is True  # no copy of each activation


def test_parameter_count_counts_the_trainable_ones(model):
    assert count_parameters(model) == 2_211_338 == sum(p.numel() for p in model.parameters())
    net = CifarCNN()
    net.classifier[-1].requires_grad_(False)  # 256 x 10 + 10 frozen
    assert count_parameters(net) == 2_211_338 - 2_570
    assert count_parameters(CifarCNN(num_classes=3)) == 2_211_338 - 7 * 257


def test_every_intermediate_shape(model, batch):
    seen: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape))) for m in _layers(model)]
    try:
        with torch.no_grad():
            logits = model(batch)
    finally:
        for h in hooks:
            h.remove()
    assert seen == [(N, *shape) for _, _, shape in SEED]
    assert logits.shape == (N, len(CLASSES))
    assert seen[CifarCNN.CAM_LAYER] == (N, 256, 6, 6) and isinstance(model.features[CifarCNN.CAM_LAYER], nn.ReLU)
    assert CifarCNN(num_classes=3)(batch).shape == (N, 3)


@pytest.mark.parametrize("train", [False, True])
def test_outputs_and_gradients_are_finite(train, batch):
    torch.manual_seed(3)
    net = CifarCNN().train(train)
    out = net(batch)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if train:
        out.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_eval_is_deterministic_and_dropout_acts_in_training_only(batch):
    torch.manual_seed(4)
    net = CifarCNN(dropout=0.5)
    assert net.classifier[3].p == 0.5 and CifarCNN().classifier[3].p == 0.0  # the default: no dropout
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(batch), net(batch))
        net.train()
        assert not torch.equal(net(batch), net(batch))
