"""``python -m train.calibrate WEIGHTS_DIR --data PATH [--write]``: calibrate a trained folder.

Rebuilds the folder's own validation hold-out (``val_size`` and ``seed`` from its ``metrics.json``
config, through the same :func:`train.recipe.split_train_val` training used), fits the temperature and
the top-label map (:mod:`cifar_model.calibration`) on those pictures only, and prints ECE, NLL and
Brier on the validation pictures and on the test split, before and after. The test split is only
scored, never fitted on.

Nothing is written unless ``--write`` is given: then ``config.json`` gets the calibration
(``temperature``, ``top_label_map``, ``unfamiliar_below``; its other keys are kept), ``metrics.json``
the before/after figures on the test split, ``reliability.png`` the test split after calibration, and
``README.md`` is rendered again from the metrics. ``python -m train`` calls :func:`fit` and
:func:`figures` itself at the end of a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cifar_model import Classifier, Metrics
from cifar_model import calibration as cal
from cifar_model.weights import CONFIG_FILE, DIAGRAM_FILE, METRICS_FILE

from . import data as datasets
from .recipe import split_train_val
from .report import render_card


def fit(val_logits: torch.Tensor, val_labels: torch.Tensor) -> dict:
    """The calibration of a network, fitted on its held-out pictures only: ``CifarCNN.set_calibration``'s
    keyword arguments (temperature, top-label map, the unsure rule's threshold)."""
    temperature = cal.fit_temperature(val_logits, val_labels)
    return {"temperature": temperature,
            "top_label_map": cal.fit_top_label_map(val_logits, val_labels, temperature, steps=cal.MAP_STEPS),
            "unfamiliar_below": cal.fit_unfamiliar_threshold(val_logits)}


def figures(test_logits: torch.Tensor, test_labels: torch.Tensor, calibration: dict, val_images: int) -> dict:
    """The calibration fields of :class:`Metrics`: ECE, NLL and Brier on the test split before and after."""
    before = cal.quality(cal.to_probabilities(test_logits), test_labels)
    after = cal.quality(cal.to_probabilities(test_logits, calibration["temperature"],
                                             top_label_map=calibration["top_label_map"]), test_labels)
    return {"temperature": calibration["temperature"], "calibration_images": val_images,
            **{f"{k}_uncalibrated": v for k, v in before.items()}, **after}


def holdout(folder: str | Path) -> tuple[int, int]:
    """``(val_size, seed)`` of the training run that wrote ``folder``, from its metrics.json config.

    Raises:
        ValueError: no metrics.json, no config in it, or ``val_size`` 0 (nothing was held out, so
            there is nothing to calibrate on without touching the test split).
    """
    path = Path(folder) / METRICS_FILE
    try:
        config = json.loads(path.read_text())["config"]
        val_size, seed = int(config["val_size"]), int(config["seed"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: can't read the training config's val_size and seed ({err!r})") from err
    if val_size <= 0:
        raise ValueError(f"{path}: val_size is {val_size}: this run held nothing out of training, so there "
                         "are no validation pictures to calibrate on (the test split must not be used). "
                         "Retrain with --val-size 5000.")
    return val_size, seed


def logits_of(clf: Classifier, pictures: np.ndarray, batch: int = 500) -> torch.Tensor:
    """Flip-averaged uncalibrated logits of uint8 N x 32 x 32 x 3 pictures, ``batch`` at a time."""
    return torch.cat([clf.logits(torch.from_numpy(pictures[i:i + batch])) for i in range(0, len(pictures), batch)])


def _figures(logits: torch.Tensor, labels: torch.Tensor, **calibration) -> dict[str, float]:
    probs = cal.to_probabilities(logits, **calibration)
    return {"accuracy": float((probs.argmax(dim=1) == labels).double().mean()),
            "confidence": float(probs.max(dim=1).values.double().mean()),
            **cal.quality(probs, labels)}


def calibrate_folder(folder: str | Path, data: str | Path | datasets.Cifar, write: bool = False, *,
                     log: Callable[[str], None] = print) -> dict:
    """Fit the calibration of ``folder`` on its validation hold-out and score it; see the module doc.

    Args:
        folder: a weights folder written by ``python -m train`` (config.json, model.safetensors,
            metrics.json with the run's config).
        data: what ``train.data.load`` takes (the same dataset the folder was trained on), or an
            already loaded :class:`train.data.Cifar`.
        write: update config.json and write reliability.png (otherwise nothing is written).
        log: where the report lines go.

    Returns:
        ``temperature``, ``top_label_map``, ``val_images``, ``test_images``,
        ``val_{accuracy,confidence,ece,nll,brier}_{before,after}`` and
        ``test_{accuracy,confidence,ece,nll,brier}_{before,after}`` ("before": plain softmax;
        "after": temperature and top-label map), and the same with ``_temperature_only``.

    Raises:
        ValueError: the folder held nothing out (``val_size`` 0) or has no readable training config.
    """
    folder = Path(folder)
    val_size, seed = holdout(folder)
    cifar = data if isinstance(data, datasets.Cifar) else datasets.load(str(data))
    _, _, val_x, val_y = split_train_val(cifar.train_images, cifar.train_labels, val_size, seed)
    clf = Classifier.from_pretrained(folder, precision="fp32")
    val_logits, val_labels = logits_of(clf, val_x), torch.from_numpy(val_y)
    test_logits, test_labels = logits_of(clf, cifar.test_images), torch.from_numpy(cifar.test_labels)

    fitted = fit(val_logits, val_labels)  # validation pictures only
    temperature, knots = fitted["temperature"], fitted["top_label_map"]
    out: dict = {"temperature": temperature, "top_label_map": knots, "val_images": len(val_y),
                 "test_images": len(cifar.test_labels)}
    stages = {"before": {}, "temperature_only": {"temperature": temperature},
              "after": {"temperature": temperature, "top_label_map": knots}}
    for split, logits, labels in (("val", val_logits, val_labels), ("test", test_logits, test_labels)):
        for stage, kwargs in stages.items():
            for name, value in _figures(logits, labels, **kwargs).items():
                out[f"{split}_{name}_{stage}"] = value

    log(f"{folder}: validation hold-out {len(val_y):,} training pictures (val_size {val_size}, seed {seed}); "
        f"test split {len(cifar.test_labels):,} pictures ({cifar.test_name})")
    log(f"fitted on the validation pictures: temperature T = {temperature:.4f}; top-label map with "
        f"{len(knots)} knots ({cal.MAP_STEPS} steps)")
    log("")
    log("| split | calibration | accuracy | mean top prob | ECE | NLL | Brier |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    names = {"before": "none (softmax)", "temperature_only": f"temperature {temperature:.3f}",
             "after": "temperature + top-label map"}
    for split in ("val", "test"):
        for stage in stages:
            f = {k: out[f"{split}_{k}_{stage}"] for k in ("accuracy", "confidence", "ece", "nll", "brier")}
            log(f"| {split} | {names[stage]} | {f['accuracy']:.2%} | {f['confidence']:.2%} | {f['ece']:.2%} "
                f"| {f['nll']:.4f} | {f['brier']:.4f} |")
    if write:
        config_path = folder / CONFIG_FILE
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps(config | fitted, indent=2, sort_keys=True) + "\n")
        metrics = Metrics.load(folder / METRICS_FILE)
        replace(metrics, **figures(test_logits, test_labels, fitted, len(val_y))).save(folder / METRICS_FILE)
        probs = cal.to_probabilities(test_logits, temperature, top_label_map=knots)
        cal.reliability_diagram(probs, test_labels).save(folder / DIAGRAM_FILE)
        render_card(folder)
        log(f"\nwrote {config_path} (calibration), {METRICS_FILE}, {DIAGRAM_FILE} (test split, after) and README.md")
    else:
        log("\n(nothing written: add --write to update config.json and write reliability.png)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("folder", type=Path, help="weights folder written by python -m train")
    p.add_argument("--data", required=True, help="the dataset it was trained on (what python -m train --data took)")
    p.add_argument("--write", action="store_true", help="update config.json and write reliability.png")
    args = p.parse_args(argv)
    try:
        calibrate_folder(args.folder, args.data, write=args.write)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
