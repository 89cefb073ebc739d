"""Grad-CAM: which parts of the 32x32 input pushed the network towards a class."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import CifarCNN
from .preprocess import normalize


def grad_cam(model: CifarCNN, pixels: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM heatmap for one 32x32x3 uint8 picture, on the last convolution with a spatial map.

    The last convolution itself reduces the picture to 1x1, so the map is taken at the one before
    it (6x6, ``CifarCNN.CAM_LAYER``): each channel's activation weighted by the mean gradient of
    the class logit, summed, ReLU'd, upsampled bilinearly to 32x32 and scaled to [0, 1].

    Args:
        model: the network (its ``eval`` weights are used; its parameters' ``.grad`` are not touched).
        pixels: the uint8 picture the network classifies (``Classifier.to_uint8``).
        class_index: the class to explain; ``None`` explains the top class.

    Returns:
        A 32x32 float32 array in [0, 1] (all zeros when nothing in the picture favours the class).
    """
    model = model.eval()
    layer = model.features[model.CAM_LAYER]
    saved: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        saved["act"] = output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = normalize(torch.from_numpy(np.ascontiguousarray(pixels)), model.mean, model.std)
            logits = model(x)
            idx = int(logits.argmax(1)) if class_index is None else class_index
            # the gradient with respect to the activation only: the parameters' .grad are left alone
            (grad,) = torch.autograd.grad(logits[0, idx], saved["act"])
    finally:
        handle.remove()
    act = saved["act"].detach()  # 1 x 256 x 6 x 6, as is grad
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=pixels.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    return (cam / top if top > 0 else cam).numpy().astype(np.float32)
