"""Inference: a picture in, the answer a visitor sees out.

:class:`Rule` is the inference rule as one module, from 32x32 uint8 pixels to calibrated
probabilities and the unsure score: the flip-averaged logits (:func:`tta_logits`, also what
training scores), calibration (a temperature, then a monotone map of the top probability) and the
unsure rule. :class:`Classifier` runs it on the CPU for the app, the command line and the benchmarks,
and ``python -m train.export`` writes the same module to ``model.onnx`` for the browser.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .explain import grad_cam
from .model import CifarCNN
from .preprocess import ImageInput, normalize, to_uint8
from .weights import Config, Weights, load


def tta_logits(net: nn.Module, pixels: torch.Tensor, mean, std, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 N x 32 x 32 x 3 pictures (on ``net``'s device) -> float32 N x C raw logits: the mean of
    the logits of each picture and its mirror image (flip test-time augmentation). ``net`` in eval mode."""
    x = normalize(pixels, mean, std).to(dtype).contiguous(memory_format=torch.channels_last)
    both = net(torch.cat([x, x.flip(-1)])).float()
    return (both[:len(x)] + both[len(x):]) / 2


def unsure_score(logits: torch.Tensor) -> torch.Tensor:
    """N x C raw logits -> N unsure scores: the energy ``-logsumexp(logits)`` (Liu et al. 2020). High
    means unlike the pictures the network was trained on."""
    return -torch.logsumexp(logits, dim=-1)


class Rule(nn.Module):
    """The inference rule: uint8 N x 32 x 32 x 3 RGB pixels -> (N x C calibrated probabilities, N unsure
    margins: how far the unsure score is past ``config.unsure_threshold``; > 0 means unsure).

    Calibration: the logits are divided by ``config.temperature``; then, if the config has a
    ``top_label_map``, the top class's probability is moved along that monotone curve (piecewise linear
    in log-odds, flat beyond its ends) and the other classes share the rest in their own proportions,
    never reaching the top class: the answer (argmax) never changes. Elementwise operations only, so
    ``torch.onnx.export`` gives the browser this very computation.
    """

    def __init__(self, net: nn.Module, config: Config, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.net, self.dtype, self.temperature = net, dtype, config.temperature
        self.mean, self.std = config.mean, config.std
        self.threshold = float("inf") if config.unsure_threshold is None else config.unsure_threshold
        self.knots = config.top_label_map is not None
        if self.knots:
            xs, ys = torch.logit(torch.tensor(config.top_label_map, dtype=torch.float64)).T
            self.register_buffer("xs", xs[:-1].float())  # each segment's start, width and slope
            self.register_buffer("widths", xs.diff().float())
            self.register_buffer("slopes", (ys.diff() / xs.diff()).float())
            self.y0 = float(ys[0])

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = tta_logits(self.net, pixels, self.mean, self.std, self.dtype)
        return self.calibrate(logits), unsure_score(logits) - self.threshold

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """N x C raw logits -> N x C calibrated probabilities (rows sum to 1, argmax kept)."""
        z = logits / self.temperature
        if not self.knots:
            return torch.softmax(z, dim=-1)
        top = nn.functional.one_hot(z.argmax(-1), z.shape[-1]).bool()
        others = z.masked_fill(top, float("-inf"))
        # The top probability's log-odds, from the logits: exact where float32 probabilities round to 1.
        odds = (z.masked_fill(~top, float("-inf"))).amax(-1) - torch.logsumexp(others, dim=-1)
        steps = torch.minimum(torch.relu(odds.unsqueeze(-1) - self.xs), self.widths)
        new_top = torch.sigmoid(self.y0 + (steps * self.slopes).sum(-1))
        share = torch.softmax(others, dim=-1)  # the other classes' proportions among themselves
        lead = share.amax(-1) * (1 + 1e-3)  # the runner-up stays below the top by a relative 1e-3
        new_top = torch.maximum(new_top, lead / (1 + lead)).unsqueeze(-1)
        return torch.where(top, new_top, share * (1 - new_top))


@dataclass(frozen=True)
class Answer:
    """What the classifier says of one picture."""

    probabilities: dict[str, float]  # every class, calibrated, in class order; they sum to 1
    unsure: bool  # the unsure rule fired: probably none of the classes, or one it often gets wrong
    unsure_margin: float  # how far the unsure score is past its threshold (> 0: unsure)
    pixels: np.ndarray = field(repr=False)  # the 32 x 32 x 3 uint8 picture classified ("what the model sees")

    @property
    def top(self) -> str:
        """The most probable class."""
        return max(self.probabilities, key=self.probabilities.__getitem__)


def _fused_for_inference(model: CifarCNN) -> nn.Module:
    """An eval-only copy with each BatchNorm folded into the convolution before it, channels-last: the
    same function as ``model.eval()`` with fewer passes over memory (on CPU, at batch size one, each of
    the five BN layers costs about as much as a convolution)."""
    fused = copy.deepcopy(model).eval()
    layers, out = list(fused.features), []
    while layers:
        layer = layers.pop(0)
        if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
            layer = fuse_conv_bn_eval(layer, layers.pop(0))
        out.append(layer)
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
    """Loaded weights and their inference rule, ready to classify pictures on the CPU.

        clf = Classifier.from_pretrained()           # the bundled weights/, a folder, or a Hub repo id
        answer = clf.predict("photo.jpg")            # Answer: .probabilities, .top, .unsure, .pixels
    """

    def __init__(self, weights: Weights, *, precision: str = "fp32") -> None:
        """``precision``: ``"fp32"`` (the default: the same answers on every CPU, and the browser's), ``"bf16"``,
        or ``"auto"`` (the ``CIFAR_PRECISION`` environment variable, else bf16 on CPUs with AMX: about 1.4x as
        fast on a photo-size upload, but a few answers near a class boundary move: 90.97% instead of 91.02%
        on the test split; benchmarks/infer_speed.py)."""
        self.weights = weights
        self.classes: list[str] = list(weights.config.classes)
        self.dtype = _pick_precision(precision)
        self.rule = Rule(_fused_for_inference(weights.model).to(self.dtype), weights.config, self.dtype).eval()

    @classmethod
    def from_pretrained(cls, source: str | Path | None = None, revision: str | None = None, *,
                        precision: str = "fp32", **hub_kwargs) -> Classifier:
        """Load weights: ``None`` -> the bundled ``weights/``; a folder path -> that folder; anything
        else -> a Hugging Face Hub repo id, downloaded at ``revision`` (pin a commit sha for
        reproducibility). Extra keyword arguments go to ``huggingface_hub.snapshot_download``
        (``cache_dir``, ``token``, ``local_files_only``...).

        Raises:
            ModelLoadError: missing or corrupt files, another architecture, Hub unreachable with
                nothing cached. Loading is strict: a wrong or missing tensor is an error.
        """
        return cls(load(source, revision, **hub_kwargs), precision=precision)

    def predict(self, picture: ImageInput) -> Answer:
        """Classify one picture (a PIL image, a path, bytes or a binary file).

        Raises:
            ImageError: the picture can't be read; the message says which problem, in plain words.
        """
        return self.answer(to_uint8(picture)[None])[0]

    def predict_many(self, pictures: Sequence[ImageInput], batch_size: int = 256) -> list[Answer]:
        """:meth:`predict` for each picture, ``batch_size`` at a time through the network."""
        out: list[Answer] = []
        for start in range(0, len(pictures), batch_size):
            out += self.answer(np.stack([to_uint8(p) for p in pictures[start:start + batch_size]]))
        return out

    @torch.inference_mode()
    def answer(self, pixels: np.ndarray) -> list[Answer]:
        """uint8 N x 32 x 32 x 3 pictures (what ``to_uint8`` gives) -> one :class:`Answer` each."""
        probs, margins = self.rule(torch.from_numpy(pixels))
        return [Answer(dict(zip(self.classes, p)), m > 0, m, x)
                for p, m, x in zip(probs.tolist(), margins.tolist(), pixels)]

    def heatmap(self, answer: Answer) -> np.ndarray:
        """32 x 32 Grad-CAM in [0, 1] of the class ``answer`` ranks first, over ``answer.pixels``."""
        config = self.weights.config
        return grad_cam(self.weights.model, answer.pixels, self.classes.index(answer.top), config.mean, config.std)
