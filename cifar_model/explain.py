"""Grad-CAM: which parts of the 32x32 input pushed the network towards a class."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import CifarCNN
from .preprocess import normalize


def grad_cam(model: CifarCNN, pixels: np.ndarray, class_index: int, mean, std) -> np.ndarray:
    """Grad-CAM heatmap of ``class_index`` for one 32x32x3 uint8 picture (``Answer.pixels``).

    The last convolution reduces the picture to 1x1, so the map is taken at the one before it (6x6,
    ``CifarCNN.CAM_LAYER``): each channel's activation weighted by the mean gradient of the class
    logit, summed, ReLU'd, upsampled bilinearly to 32x32 and scaled to [0, 1]. ``model`` (in eval mode)
    is run in two halves, with no hooks and no ``.grad`` written, so threads may share it.

    Returns:
        A 32x32 float32 array in [0, 1] (all zeros when nothing in the picture favours the class).
    """
    cut = model.CAM_LAYER + 1
    with torch.enable_grad():
        x = normalize(torch.from_numpy(np.ascontiguousarray(pixels)), mean, std)
        act = model.features[:cut](x).detach().requires_grad_()  # 1 x 256 x 6 x 6
        logit = model.classifier(model.features[cut:](act))[0, class_index]
        (grad,) = torch.autograd.grad(logit, act)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=pixels.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    return (cam / top if top > 0 else cam).numpy().astype(np.float32)
