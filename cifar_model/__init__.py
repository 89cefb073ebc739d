"""CIFAR-10 classification with the seed CNN: the model, its preprocessing, inference and loading.

    from cifar_model import Classifier
    clf = Classifier.from_pretrained()              # the bundled weights/ (or a folder, or a Hub repo id)
    clf.predict("photo.jpg")                        # [{"airplane": 0.01, ..., "truck": 0.00}]

Modules, bottom up: ``model`` (the network; its config travels in config.json), ``preprocess`` (the
one path from an untrusted picture to 32x32 uint8 pixels, and ``normalize``), ``calibration`` (the
one place logits become probabilities, and how good they are), ``metrics`` (metrics.json, typed),
``weights`` (finding, checking and loading a folder or Hub repo), ``classifier`` (the one inference
rule, ``tta_logits``, and ``Classifier``), ``explain`` (Grad-CAM). No Gradio and no training code:
``app.py`` and ``train/`` are built on this package.
"""

from .classifier import Classifier, tta_logits
from .explain import grad_cam
from .metrics import Metrics
from .model import CIFAR_MEAN, CIFAR_STD, CLASSES, IMAGE_SIZE, CifarCNN, count_parameters
from .preprocess import MAX_PIXELS, ImageError, normalize, open_image, to_rgb, to_uint8
from .weights import BUNDLED_WEIGHTS, ModelLoadError, WeightsInfo

__all__ = [
    "BUNDLED_WEIGHTS", "CIFAR_MEAN", "CIFAR_STD", "CLASSES", "IMAGE_SIZE", "MAX_PIXELS",
    "Classifier", "CifarCNN", "ImageError", "Metrics", "ModelLoadError", "WeightsInfo",
    "count_parameters", "grad_cam", "normalize", "open_image", "to_rgb", "to_uint8", "tta_logits",
]
