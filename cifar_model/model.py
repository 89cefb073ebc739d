"""The seed CNN: six convolutions, five batch norms, three max-pools, two linear layers.

Imports only torch and does no I/O. What inference needs besides the tensors (class names,
normalisation, calibration, the unsure rule) travels in the weights folder's ``config.json``
(:class:`cifar_model.weights.Config`); the network itself only needs to know how many classes it has.
"""

from __future__ import annotations

import torch
from torch import nn

# CIFAR-10's own label order: index i of the logits is CLASSES[i].
CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# Per-channel mean and std of the CIFAR-10 training images (RGB, pixel values in [0, 1]).
CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
# The only input size: the two convolutions without padding reduce 8x8 to 6x6 and 3x3 to 1x1.
IMAGE_SIZE = 32


def _conv_bn(cin: int, cout: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CifarCNN(nn.Module):
    """The seed network, layer for layer (2,211,338 parameters for ten classes).

    Shapes for a batch of N normalised 32x32 RGB images::

        conv 3->64 pad 1, BN, ReLU, maxpool 2     N x  64 x 16 x 16
        conv 64->128 pad 1, BN, ReLU              N x 128 x 16 x 16
        conv 128->256 pad 1, BN, ReLU, maxpool 2  N x 256 x  8 x  8
        conv 256->256 pad 1, BN, ReLU             N x 256 x  8 x  8
        conv 256->256 no pad, BN, ReLU, maxpool 2 N x 256 x  3 x  3   (8 -> 6 -> 3)
        conv 256->256 no pad, ReLU (no BN)        N x 256 x  1 x  1
        flatten, linear 256->256, ReLU, dropout   N x 256
        linear 256->num_classes                   N x num_classes
    """

    # Index in ``features`` of the ReLU after the last convolution that still has a spatial map
    # (6x6): Grad-CAM's target. The very last convolution reduces to 1x1, where a heatmap says nothing.
    CAM_LAYER = 16

    def __init__(self, num_classes: int = len(CLASSES), dropout: float = 0.0) -> None:
        super().__init__()
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
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised N x 3 x 32 x 32 images -> N x num_classes logits."""
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
