"""Scoring on the test split and writing the Hub-ready folder: weights, config, metrics, model card."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from cifar_model import CifarCNN, count_parameters

JPEG_NOTE = (" The copy's JPEG compression costs a few points against the original binary CIFAR-10,"
             " so this is not the original benchmark's figure.")


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
    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_folder(model: CifarCNN, out: Path, metrics: dict, command: str) -> None:
    """``model.safetensors`` + ``config.json`` (via the Hub mixin), ``metrics.json``, ``README.md``."""
    out.mkdir(parents=True, exist_ok=True)
    card = model_card(metrics, command)
    model.cpu().save_pretrained(out, model_card_kwargs={})  # writes the mixin's default card ...
    card.save(out / "README.md")  # ... which ours replaces
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def model_card(m: dict, command: str) -> ModelCard:
    """The model card, with the test accuracy in its ``model-index`` (the Hub's evaluation results)."""
    data = ModelCardData(
        model_name="cifar10-seed-cnn",
        library_name="cifar_model",
        license="mit",
        pipeline_tag="image-classification",
        tags=["image-classification", "cifar10", "pytorch", "safetensors"],
        datasets=["cifar10"],
        metrics=["accuracy"],
        eval_results=[EvalResult(
            task_type="image-classification", dataset_type="cifar10", dataset_name=m["dataset"],
            dataset_split="test", metric_type="accuracy", metric_value=round(m["test_accuracy"], 4),
        )],
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + _card_body(m, command))


def _card_body(m: dict, command: str) -> str:
    classes = list(m["per_class_accuracy"])
    per_class = "\n".join(f"| {c} | {a:.1%} |" for c, a in m["per_class_accuracy"].items())
    head = "| true \\ predicted | " + " | ".join(c[:5] for c in classes) + " |"
    sep = "|---" * (len(classes) + 1) + "|"
    rows = "\n".join(f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, m["confusion_matrix"]))
    cfg = m["config"]
    load_line = (f'clf = Classifier.from_pretrained("{m["repo_id"]}", revision="<commit sha printed by the push>")'
                 if m.get("repo_id") else 'clf = Classifier.from_pretrained("path/to/this/folder")  # or a Hub repo id')
    tta = "with flip test-time augmentation (the mean of the logits of the picture and its mirror image), as `Classifier.predict` does" if cfg["tta"] else "without test-time augmentation"
    val = f"{m['val_accuracy']:.2%} on {cfg['val_size']:,} training pictures held out" if m.get("val_accuracy") is not None else "none held out"
    return f"""
# CIFAR-10 seed CNN

The seed network of the CIFAR-10 Gradio demo (6 convolutions, 5 batch norms, 3 max-pools, 2 linear
layers; {m['parameters']:,} parameters), trained from scratch.

**Test accuracy: {m['test_accuracy']:.2%}** on the {m['test_images']:,} pictures of the {m['dataset']},
{tta}.{JPEG_NOTE if 'JPEG' in m['dataset'] else ''} The test split was used once, for this report;
the recipe was tuned on a held-out part of the training split.

## How to use

```python
from cifar_model import Classifier  # the library in the demo's repository
{load_line}
clf.predict("photo.jpg")  # [{{"airplane": 0.01, ..., "truck": 0.00}}]
```

Input: any picture; its largest centred square is resized to 32x32 (bicubic, antialiased), then
normalised with the mean and std in `config.json`. The model knows only these ten classes and
answers one of them for anything: see the demo's "unsure" notice.

## Evaluation

Per-class accuracy on the test split:

| class | accuracy |
|---|---|
{per_class}

Confusion matrix (rows: true class, columns: predicted):

{head}
{sep}
{rows}

Validation accuracy: {val}.

## Training

- Data: {m['data_source']}; {m['train_images']:,} training pictures.
- Hardware: {m['hardware']}; training time {m['train_seconds']:.1f} s for {cfg['epochs']} epochs
  (first step to last, evaluation excluded{f"; torch.compile and warm-up took another {m['compile_seconds']:.0f} s" if m.get('compile_seconds') else ''}).
- Recipe: SGD with Nesterov momentum {cfg['momentum']}, batch {cfg['batch_size']}, one-cycle learning rate
  peaking at {cfg['lr']}, weight decay {cfg['weight_decay']}, label smoothing {cfg['label_smoothing']},
  dropout {cfg['dropout']}, random flip + translate {cfg['translate']} px{f" + cutout {cfg['cutout']} px" if cfg['cutout'] else ''},
  bf16 autocast, channels-last{', whitening init of the first convolution' if cfg['whiten'] else ''}{f", weight EMA {cfg['ema']}" if cfg['ema'] else ''}, seed {cfg['seed']}.
- Command: `{command}`
- Software: PyTorch {m['torch']}.

## Files

`model.safetensors` (weights; safetensors, so loading runs no code), `config.json` (class names,
input size, normalisation), `metrics.json` (every figure on this card).
"""


def metrics_for(model: CifarCNN, scores: dict, cfg: dict, *, train_seconds: float, val_accuracy: float | None,
                dataset: str, data_source: str, train_images: int, history: list[dict]) -> dict:
    return {
        **scores,
        "val_accuracy": val_accuracy,
        "dataset": dataset,
        "data_source": data_source,
        "train_images": train_images,
        "train_seconds": round(train_seconds, 2),
        "hardware": hardware(),
        "parameters": count_parameters(model),
        "torch": torch.__version__,
        "config": cfg,
        "history": history,
    }
