"""The seed CNN: six convolutions, five batch norms, three max-pools, two linear layers.

Imports only torch and huggingface_hub's mixin. Everything inference needs (class names, input size,
normalisation, the calibration temperature) is an ``__init__`` argument, so ``save_pretrained``
writes it to ``config.json`` beside the weights and a loaded model cannot drift from the one trained.
Loading (``from_pretrained``) is the mixin's, with its hook narrowed in :mod:`cifar_model.weights`:
safetensors only, strict, ``config.json`` checked before anything is built.
"""

from __future__ import annotations

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

# CIFAR-10's own label order: index i of the logits is CLASSES[i].
CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# Per-channel mean and std of the CIFAR-10 training images (RGB, pixel values in [0, 1]).
CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32
# Where the code is to be published: the Hub's card links to it (the mixin's ``repo_url``). Nothing has
# been pushed there yet; whoever publishes a fork sets their own address here before pushing weights.
REPO_URL = "https://github.com/cifar10-demo/cifar10-seed-cnn"


def _conv_bn(cin: int, cout: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CifarCNN(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="cifar_model",
    tags=["image-classification", "cifar10", "pytorch"],
    license="mit",
    pipeline_tag="image-classification",
    repo_url=REPO_URL,
):
    """The seed network, layer for layer (2,211,338 parameters for ten classes).

    Shapes for a batch of N 32x32 RGB images::

        conv 3->64 pad 1, BN, ReLU, maxpool 2     N x  64 x 16 x 16
        conv 64->128 pad 1, BN, ReLU              N x 128 x 16 x 16
        conv 128->256 pad 1, BN, ReLU, maxpool 2  N x 256 x  8 x  8
        conv 256->256 pad 1, BN, ReLU             N x 256 x  8 x  8
        conv 256->256 no pad, BN, ReLU, maxpool 2 N x 256 x  3 x  3   (8 -> 6 -> 3)
        conv 256->256 no pad, ReLU (no BN)        N x 256 x  1 x  1
        flatten, linear 256->256, ReLU, dropout   N x 256
        linear 256->num_classes                   N x num_classes

    Args:
        classes: class names in logit order.
        image_size: side of the square input; the no-padding convolutions need exactly 32.
        mean: per-channel mean subtracted from [0, 1] RGB pixels before the first convolution.
        std: per-channel std the centred pixels are divided by.
        dropout: dropout probability before the last linear layer (training only).
        temperature: the logits are divided by it before the softmax (calibration fitted on held-out
            pictures; 1.0 = none). It does not change which class wins.
        top_label_map: knots ``[[x, y], ...]`` mapping the temperature-scaled top probability to the
            calibrated one (see :func:`cifar_model.calibration.to_probabilities`); ``None`` = none.
        unfamiliar_below: the unsure rule's threshold on the logits' energy score, fitted on held-out
            pictures (:func:`cifar_model.calibration.is_unfamiliar`); ``None`` = no rule.
    """

    # Index in ``features`` of the ReLU after the last convolution that still has a spatial map
    # (6x6): Grad-CAM's target. The very last convolution (index 18) reduces to 1x1, where a
    # heatmap would say nothing.
    CAM_LAYER = 16

    def __init__(
        self,
        classes: list[str] | tuple[str, ...] = CLASSES,
        image_size: int = IMAGE_SIZE,
        mean: list[float] | tuple[float, ...] = CIFAR_MEAN,
        std: list[float] | tuple[float, ...] = CIFAR_STD,
        dropout: float = 0.3,
        temperature: float = 1.0,
        top_label_map: list[list[float]] | None = None,
        unfamiliar_below: float | None = None,
    ) -> None:
        super().__init__()
        if image_size != IMAGE_SIZE:
            raise ValueError(f"the seed network takes {IMAGE_SIZE}x{IMAGE_SIZE} input, not {image_size}")
        self.classes = list(classes)
        self.image_size = image_size
        self.mean = list(mean)
        self.std = list(std)
        self.temperature = float(temperature)
        self.top_label_map = top_label_map
        self.unfamiliar_below = unfamiliar_below
        self.features = nn.Sequential(
            *_conv_bn(3, 64, 1), nn.MaxPool2d(2),
            *_conv_bn(64, 128, 1),
            *_conv_bn(128, 256, 1), nn.MaxPool2d(2),
            *_conv_bn(256, 256, 1),
            *_conv_bn(256, 256, 0), nn.MaxPool2d(2),
            nn.Conv2d(256, 256, 3), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256, 256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, len(self.classes)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised N x 3 x 32 x 32 images -> N x num_classes logits."""
        return self.classifier(self.features(x))

    def set_calibration(self, temperature: float, top_label_map: list[list[float]] | None = None,
                        unfamiliar_below: float | None = None) -> None:
        """Keep a calibration fitted on held-out pictures; ``save_pretrained`` writes it to config.json."""
        self.temperature, self.top_label_map = float(temperature), top_label_map
        self.unfamiliar_below = unfamiliar_below
        self._hub_mixin_config.update(temperature=self.temperature, top_label_map=top_label_map,
                                      unfamiliar_below=unfamiliar_below)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, config: dict | None = None, **hub_kwargs) -> "CifarCNN":
        # The mixin's loading hook: its default falls back to pickles and loads non-strictly.
        from .weights import load_checked

        return load_checked(cls, model_id, config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
