"""CIFAR-10 classification with the seed CNN: the model, its preprocessing, inference and loading.

    from cifar_model import Classifier
    clf = Classifier.from_pretrained()              # the bundled weights/
    clf.predict("photo.jpg")                        # [{"airplane": 0.01, ..., "truck": 0.00}]

No Gradio and no training code here: ``app.py`` and ``train/`` are built on this package.
"""

from .classifier import Classifier
from .explain import grad_cam
from .model import CIFAR_MEAN, CIFAR_STD, CLASSES, IMAGE_SIZE, CifarCNN, count_parameters
from .preprocess import MAX_PIXELS, ImageError, normalize, open_image, preprocess, to_rgb, to_uint8
from .weights import BUNDLED_WEIGHTS, ModelLoadError, WeightsInfo

__all__ = [
    "BUNDLED_WEIGHTS", "CIFAR_MEAN", "CIFAR_STD", "CLASSES", "IMAGE_SIZE", "MAX_PIXELS",
    "Classifier", "CifarCNN", "ImageError", "ModelLoadError", "WeightsInfo",
    "count_parameters", "grad_cam", "normalize", "open_image", "preprocess", "to_rgb", "to_uint8",
]
