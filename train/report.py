"""Scoring on the test split and writing the Hub-ready folder: weights, config, metrics, model card.

The card is ``card_template.md`` rendered by huggingface_hub's ``ModelCard.from_template`` from the
folder's ``Metrics`` (``cifar_model.metrics``): every figure on it is one in ``metrics.json``.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from cifar_model import CifarCNN, Classifier, Config, Metrics, Weights, save
from cifar_model.weights import CARD_FILE, EXAMPLE_FILE, METRICS_FILE, read_record, write_record

from .export import export_folder

TEMPLATE = Path(__file__).with_name("card_template.md")
DATASET_ID = "uoft-cs/cifar10"  # the Hub's CIFAR-10
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cat_1.jpg"  # the card's widget picture
# Where the code is to be published: the card links to it. Nothing has been pushed there yet; whoever
# publishes a fork sets their own address here before pushing weights.
REPO_URL = "https://github.com/cifar10-demo/cifar10-seed-cnn"



def score(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    pred = logits.argmax(1).cpu().numpy()
    true = labels.cpu().numpy()
    k = len(classes)
    confusion = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    per_class = confusion.diagonal() / confusion.sum(1).clip(min=1)
    return {
        "test_accuracy": float((pred == true).mean()),
        "test_images": int(len(true)),
        "per_class_accuracy": {c: float(a) for c, a in zip(classes, per_class)},
        "confusion_matrix": confusion.tolist(),
    }


def hardware() -> str:
    """What trained it, for the card: ``1x <GPU name>`` or ``CPU (<processor>, <n> threads)``."""
    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_folder(out: Path, model: CifarCNN, config: Config, metrics: Metrics) -> None:
    """Write the Hub-ready folder: ``model.safetensors``, ``config.json``, ``metrics.json``, the card
    and its widget picture, with the widget's answer given by these very weights."""
    out = Path(out)
    save(out, model, config)
    write_record(metrics, out / METRICS_FILE)
    shutil.copyfile(EXAMPLE, out / EXAMPLE_FILE)
    answer = Classifier(Weights(model, config), precision="fp32").predict(EXAMPLE)
    src = f"https://huggingface.co/{metrics.repo_id}/resolve/main/{EXAMPLE_FILE}" if metrics.repo_id else EXAMPLE_FILE
    render_card(out, widget=[widget_example(src, answer.probabilities, "a CIFAR-10 test picture")])
    export_folder(out)  # model.onnx, for the browser


def render_card(folder: Path, widget: list[dict] | None = None) -> ModelCard:
    """Write ``folder/README.md`` from its ``metrics.json``; the card's widget examples are kept unless
    ``widget`` replaces them.

    Raises:
        ValueError: ``metrics.json`` missing or invalid (the message names the file and field).
    """
    folder = Path(folder)
    metrics = read_record(Metrics, folder / METRICS_FILE)
    if widget is None and (folder / CARD_FILE).is_file():
        widget = ModelCard.load(folder / CARD_FILE).data.get("widget")
    card = model_card(metrics, widget=widget)
    card.save(folder / CARD_FILE)
    return card


def model_card(metrics: Metrics, *, widget: list[dict] | None = None) -> ModelCard:
    """The model card: metadata the Hub reads (library, task, dataset id, ``model-index`` with the test
    accuracy and ECE, widget examples), then ``card_template.md``.

    Args:
        metrics: the run's figures; every number on the card comes from here.
        widget: example pictures with this model's answers (see ``widget_example``); the Hub runs no
            inference for a custom library, so the outputs shown are these.
    """
    m = metrics
    results = [_result("accuracy", m.test_accuracy, m.dataset)]
    if m.ece is not None:
        results.append(_result("ece", m.ece, m.dataset, "expected calibration error (15 bins), after calibration"))
    data = ModelCardData(
        model_name=m.repo_id.split("/")[-1] if m.repo_id else "cifar10-seed-cnn",
        library_name="cifar_model",
        license="mit",
        pipeline_tag="image-classification",
        tags=["image-classification", "cifar10", "pytorch", "safetensors"],
        datasets=[DATASET_ID],
        metrics=[r.metric_type for r in results],
        eval_results=results,
        widget=widget or None,  # an extra key: ModelCardData writes it to the YAML as it is
    )
    return ModelCard.from_template(
        data, template_path=str(TEMPLATE), m=m, cfg=m.config, widget=widget, code_url=REPO_URL,
        pct=_pct, dec=_dec, num="{:,}".format,
    )


def widget_example(src: str, probabilities: dict[str, float], title: str | None = None, top: int = 3) -> dict:
    """One widget example for the card: a picture's URL and this model's ``top`` answers for it.

    ``probabilities`` is what ``Classifier.predict`` returned for that picture, e.g.
    ``widget_example(url, clf.predict(path)[0], "cat")``.
    """
    best = sorted(probabilities.items(), key=lambda kv: kv[1], reverse=True)[:top]
    example = {"src": src, "output": [{"label": c, "score": round(float(p), 4)} for c, p in best]}
    return {"example_title": title, **example} if title else example


def _result(metric: str, value: float, dataset: str, name: str | None = None) -> EvalResult:
    return EvalResult(task_type="image-classification", dataset_type=DATASET_ID, dataset_name=dataset,
                      dataset_split="test", metric_type=metric, metric_value=value, metric_name=name)


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def _dec(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
