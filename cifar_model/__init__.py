"""CIFAR-10 classification with the seed CNN: the model, its preprocessing, inference and loading.

    from cifar_model import Classifier
    clf = Classifier.from_pretrained()          # the bundled weights/ (or a folder, or a Hub repo id)
    answer = clf.predict("photo.jpg")           # .probabilities {"airplane": 0.01, ...}, .top, .unsure

Modules, bottom up: ``model`` (the network), ``preprocess`` (the one path from an untrusted picture
to 32x32 uint8 pixels, and ``normalize``), ``weights`` (the weights folder: its files checked, loaded
from a folder or the Hub), ``classifier`` (the inference rule and ``Classifier``), ``explain``
(Grad-CAM). No Gradio and no training code: ``app.py`` and ``train/`` are built on this package.
"""

from .classifier import Answer, Classifier, Rule, tta_logits
from .explain import grad_cam
from .model import CIFAR_MEAN, CIFAR_STD, CLASSES, IMAGE_SIZE, CifarCNN, count_parameters
from .preprocess import MAX_PIXELS, ImageError, normalize, open_image, to_uint8
from .weights import BUNDLED_WEIGHTS, Config, Metrics, ModelLoadError, Weights, load, save

__all__ = [
    "BUNDLED_WEIGHTS", "CIFAR_MEAN", "CIFAR_STD", "CLASSES", "IMAGE_SIZE", "MAX_PIXELS",
    "Answer", "Classifier", "CifarCNN", "Config", "ImageError", "Metrics", "ModelLoadError", "Rule", "Weights",
    "count_parameters", "grad_cam", "load", "normalize", "open_image", "save", "to_uint8", "tta_logits",
]
