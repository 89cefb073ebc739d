"""Inference: pictures in, the probability of every class out.

:func:`tta_logits` is the one inference rule (the mean of the logits of a picture and its mirror
image); training's evaluation, :class:`Classifier` and the benchmarks all call it, and
:func:`cifar_model.calibration.to_probabilities` is the one place where logits become probabilities.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .calibration import is_unfamiliar, to_probabilities
from .model import CifarCNN
from .preprocess import ImageInput, normalize, to_uint8
from .weights import WeightsInfo, load


@torch.inference_mode()
def tta_logits(net: nn.Module, pixels: torch.Tensor, mean, std, *, tta: bool = True, batch_size: int = 2500,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 N x 32 x 32 x 3 pictures (on ``net``'s device) -> float32 N x num_classes logits.

    With ``tta`` each picture's logits are averaged with its mirror image's (flip test-time
    augmentation): the rule the model card's accuracy is measured with. ``net`` is used in eval mode.
    """
    was_training = net.training
    net.eval()
    out = []
    for chunk in pixels.split(batch_size):
        x = normalize(chunk, mean, std).to(dtype).contiguous(memory_format=torch.channels_last)
        if tta:
            both = net(torch.cat([x, x.flip(-1)])).float()
            out.append((both[:len(x)] + both[len(x):]) / 2)
        else:
            out.append(net(x).float())
    net.train(was_training)
    return torch.cat(out)


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


def _cpu_has_amx_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (Intel AMX), so bf16 inference pays."""
    try:
        with open("/proc/cpuinfo") as f:
            return any("amx_bf16" in line for line in f if line.startswith("flags"))
    except OSError:
        return False


def _pick_precision(precision: str) -> torch.dtype:
    precision = os.environ.get("CIFAR_PRECISION", precision) if precision == "auto" else precision
    if precision == "auto":
        return torch.bfloat16 if _cpu_has_amx_bf16() else torch.float32
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


class Classifier:
    """A loaded CifarCNN with its preprocessing, ready to classify pictures on the CPU.

    Use :meth:`from_pretrained`; ``predict`` averages the logits of each picture and its mirror
    image (flip test-time augmentation), the same rule the model card's test accuracy is measured
    with.
    """

    def __init__(self, model: CifarCNN, info: WeightsInfo | None = None, *, tta: bool = True,
                 precision: str = "auto") -> None:
        """Wrap a model. ``precision``: ``"fp32"``, ``"bf16"``, or ``"auto"`` (the default; the
        ``CIFAR_PRECISION`` environment variable can set it): bf16 on CPUs with AMX, where it runs
        the network about twice as fast for the same test accuracy (benchmarks/infer_speed.py)."""
        self.model = model.eval()
        self.info = info or WeightsInfo("in-memory", Path("."))
        self.tta = tta
        self.classes: list[str] = list(model.classes)
        self.mean, self.std, self.image_size = model.mean, model.std, model.image_size
        self.temperature, self.top_label_map = model.temperature, model.top_label_map
        self.unfamiliar_below = model.unfamiliar_below
        self.dtype = _pick_precision(precision)
        self._net = _fused_for_inference(model).to(self.dtype)
        self.backend = f"{'bf16' if self.dtype == torch.bfloat16 else 'fp32'}, BatchNorm folded, channels-last"

    @classmethod
    def from_pretrained(cls, source: str | Path | None = None, revision: str | None = None, *,
                        precision: str = "auto", **hub_kwargs) -> "Classifier":
        """Load weights: ``None`` -> the bundled ``weights/``; a folder path -> that folder; anything
        else -> a Hugging Face Hub repo id, downloaded at ``revision`` (pin a commit sha for
        reproducibility). Extra keyword arguments go to ``huggingface_hub.snapshot_download``
        (``cache_dir``, ``token``, ``local_files_only``...). ``precision``: see ``__init__``.

        Raises:
            ModelLoadError: missing or corrupt files, another architecture, Hub unreachable with
                nothing cached. Loading is strict: a wrong or missing tensor is an error.
        """
        model, info = load(source, revision, **hub_kwargs)
        return cls(model, info, precision=precision)

    def to_uint8(self, image: ImageInput) -> np.ndarray:
        """The 32x32x3 uint8 picture the network classifies for ``image`` ("what the model sees")."""
        return to_uint8(image, self.image_size)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 N x 32 x 32 x 3 -> N x num_classes raw logits (flip-averaged when ``tta``; uncalibrated)."""
        return tta_logits(self._net, pixels, self.mean, self.std, tta=self.tta, dtype=self.dtype)

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 N x 32 x 32 x 3 -> N x num_classes calibrated probabilities (rows sum to 1)."""
        return self.calibrate(self.logits(pixels))

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw logits (from :meth:`logits`) -> calibrated probabilities, with this model's calibration."""
        return to_probabilities(logits, self.temperature, top_label_map=self.top_label_map)

    def unfamiliar(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw N x num_classes logits -> N bools: the unsure rule (all False when the weights have none)."""
        if self.unfamiliar_below is None:
            return torch.zeros(len(logits), dtype=torch.bool)
        return is_unfamiliar(logits, self.unfamiliar_below).reshape(len(logits))

    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 256) -> list[dict[str, float]]:
        """Classify pictures (PIL images, paths or bytes; one or a list).

        Returns:
            One dict per picture mapping every class name to its calibrated probability (summing
            to 1), in class order.

        Raises:
            ImageError: a picture can't be read; the message says which problem, in plain words.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        out: list[dict[str, float]] = []
        for start in range(0, len(images), batch_size):
            out += self.predict_pixels(np.stack([self.to_uint8(im) for im in images[start:start + batch_size]]))
        return out

    def predict_pixels(self, pixels: np.ndarray) -> list[dict[str, float]]:
        """uint8 N x 32 x 32 x 3 pictures (what :meth:`to_uint8` gives) -> one ``{class: probability}`` each."""
        return [dict(zip(self.classes, row)) for row in self.probabilities(torch.from_numpy(pixels)).tolist()]
