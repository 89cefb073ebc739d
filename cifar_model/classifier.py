"""Inference: pictures in, the probability of every class out."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .model import CifarCNN
from .preprocess import ImageInput, normalize, to_uint8
from .weights import WeightsInfo, load_model, resolve


def _fused_for_inference(model: CifarCNN) -> nn.Module:
    """An eval-only copy with each BatchNorm folded into the convolution before it, channels-last.

    Same function as ``model.eval()``, fewer passes over memory: on CPU the five BN layers cost
    about as much as a convolution each at batch size one.
    """
    fused = copy.deepcopy(model).eval()
    layers = list(fused.features)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
            i += 2
        else:
            out.append(layers[i])
            i += 1
    fused.features = nn.Sequential(*out)
    return fused.to(memory_format=torch.channels_last)


class Classifier:
    """A loaded CifarCNN with its preprocessing, ready to classify pictures on the CPU.

    Use :meth:`from_pretrained`; ``predict`` averages the logits of each picture and its mirror
    image (flip test-time augmentation), the same rule the model card's test accuracy is measured
    with.
    """

    def __init__(self, model: CifarCNN, info: WeightsInfo | None = None, *, tta: bool = True) -> None:
        self.model = model.eval()
        self.info = info or WeightsInfo("in-memory", Path("."))
        self.tta = tta
        self.classes: list[str] = list(model.classes)
        self.mean, self.std, self.image_size = model.mean, model.std, model.image_size
        self._net = _fused_for_inference(model)

    @classmethod
    def from_pretrained(cls, source: str | Path | None = None, revision: str | None = None, **hub_kwargs) -> "Classifier":
        """Load weights: ``None`` -> the bundled ``weights/``; a folder path -> that folder; anything
        else -> a Hugging Face Hub repo id, downloaded at ``revision`` (pin a commit sha for
        reproducibility). Extra keyword arguments go to ``huggingface_hub.snapshot_download``
        (``cache_dir``, ``token``, ``local_files_only``...).

        Raises:
            ModelLoadError: missing or corrupt files, another architecture, Hub unreachable with
                nothing cached. Loading is strict: a wrong or missing tensor is an error.
        """
        info = resolve(source, revision, **hub_kwargs)
        return cls(load_model(info), info)

    def to_uint8(self, image: ImageInput) -> np.ndarray:
        """The 32x32x3 uint8 picture the network classifies for ``image`` ("what the model sees")."""
        return to_uint8(image, self.image_size)

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 N x 32 x 32 x 3 -> N x num_classes logits (flip-averaged when ``tta``)."""
        x = normalize(pixels, self.mean, self.std).contiguous(memory_format=torch.channels_last)
        if not self.tta:
            return self._net(x)
        both = self._net(torch.cat([x, x.flip(-1)]))
        n = len(x)
        return (both[:n] + both[n:]) / 2

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 N x 32 x 32 x 3 -> N x num_classes probabilities (rows sum to 1)."""
        return torch.softmax(self.logits(pixels).float(), dim=1)

    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 256) -> list[dict[str, float]]:
        """Classify pictures (PIL images, paths or bytes; one or a list).

        Returns:
            One dict per picture mapping every class name to its probability (summing to 1),
            in class order.

        Raises:
            ImageError: a picture can't be read; the message says which problem, in plain words.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        out: list[dict[str, float]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            pixels = torch.from_numpy(np.stack([self.to_uint8(im) for im in chunk]))
            for row in self.probabilities(pixels).tolist():
                out.append(dict(zip(self.classes, row)))
        return out
