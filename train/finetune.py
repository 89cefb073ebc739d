"""``python -m train.finetune WEIGHTS --data PATH --outliers POOL.npz --out FOLDER``: teach trained weights to
say "none of the ten" (outlier exposure, Hendrycks et al. 2019), on a GPU or in minutes on a CPU.

Each step takes a batch of the training pictures the weights were trained on (the recipe's flip, shift
and cutout) and half as many pictures of other things from POOL (``benchmarks/outliers.py`` builds it:
photos, textures, drawings, synthetic pictures, none of them of a CIFAR-10 class) and minimises
cross-entropy with label smoothing on the first plus ``lam`` x cross-entropy to the uniform distribution
on the second, with BatchNorm's statistics frozen at the weights' own. The result is blended with the
starting weights (``blend`` of the fine-tuned ones: plain fine-tuning cost a few tenths of a point of
accuracy; the blend keeps most of the gain), then calibrated on the held-out pictures, scored once on
the test split, and written as a weights folder like ``python -m train``'s, its ``metrics.json`` saying
how it was made.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cifar_model import CIFAR_MEAN, CIFAR_STD, Config, Rule, load, normalize
from cifar_model.weights import METRICS_FILE, Metrics, read_record

from . import calibrate
from . import data as datasets
from .recipe import _augment, _param_groups, split_train_val
from .report import hardware, score, write_folder


def finetune(model: torch.nn.Module, pictures: np.ndarray, labels: np.ndarray, outliers: np.ndarray, *, epochs: float,
             lr: float, lam: float, batch: int = 256, cutout: int = 12, seed: int = 0, log=print) -> float:
    """Fine-tune ``model`` in place on the CPU (bf16 autocast, channels-last); return the minutes it took."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.train().to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()  # outliers must not move the normalisation the training pictures get
    xs, ys, xo = torch.from_numpy(pictures), torch.from_numpy(labels).long(), torch.from_numpy(outliers)
    steps = len(xs) // batch
    total = int(round(epochs * steps))
    opt = torch.optim.SGD(_param_groups(model, 5e-4), lr=lr, momentum=0.9, nesterov=True)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    step, started = 0, time.perf_counter()
    while step < total:
        with torch.no_grad():  # one epoch of augmented pictures at a time, as the recipe does
            ex = _augment(normalize(xs, CIFAR_MEAN, CIFAR_STD).to(torch.bfloat16), 4, cutout)
            pick = torch.from_numpy(rng.choice(len(xo), steps * batch // 2, replace=len(xo) < steps * batch // 2))
            eo = _augment(normalize(xo[pick], CIFAR_MEAN, CIFAR_STD).to(torch.bfloat16), 4, 0)
        order = torch.randperm(len(xs))
        for i in range(min(steps, total - step)):
            for g in opt.param_groups:  # cosine from lr to 0
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = order[i * batch:(i + 1) * batch]
            x = torch.cat([ex[idx], eo[i * batch // 2:(i + 1) * batch // 2]])
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                z = model(x).float()
            z_in, z_out = z[:len(idx)], z[len(idx):]
            loss = ce(z_in, ys[idx]) + lam * (torch.logsumexp(z_out, 1) - z_out.mean(1)).mean()  # CE to uniform
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0 or step == total:
                log(f"step {step}/{total} | loss {loss.item():.4f} | {(time.perf_counter() - started) / 60:.1f} min")
    model.eval().to(memory_format=torch.contiguous_format)
    return (time.perf_counter() - started) / 60


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.finetune",  # pragma: no mutate
                                description=__doc__.splitlines()[0])  # pragma: no mutate
    p.add_argument("weights", type=Path, help="the weights folder to start from (written by python -m train)")
    p.add_argument("--data", required=True, help="the dataset the weights were trained on")
    p.add_argument("--outliers", type=Path, required=True, help="pictures of none of the classes (.npz, 'images')")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (cosine to 0)")
    p.add_argument("--lam", type=float, default=0.5, help="weight of the outliers' loss")
    p.add_argument("--blend", type=float, default=0.8, help="share of the fine-tuned weights in the result")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score", nargs="*", default=[], metavar="NAME=PATH.npz",
                   help="pictures of none of the classes: the share the unsure rule flags goes to metrics.json")
    args = p.parse_args(argv)
    start = load(args.weights)
    metrics = read_record(Metrics, args.weights / METRICS_FILE)
    cifar = datasets.load(args.data)
    train_x, train_y, val_x, val_y = split_train_val(cifar.train_images, cifar.train_labels,
                                                     metrics.config["val_size"], metrics.config["seed"])
    outliers = np.load(args.outliers)["images"]
    model = copy.deepcopy(start.model)
    minutes = finetune(model, train_x, train_y, outliers, epochs=args.epochs, lr=args.lr, lam=args.lam,
                       cutout=metrics.config.get("cutout", 12), seed=args.seed)
    first = start.model.state_dict()
    model.load_state_dict({k: first[k] + args.blend * (v - first[k]) if v.is_floating_point() else v
                           for k, v in model.state_dict().items()})
    config = Config(list(cifar.classes), list(CIFAR_MEAN), list(CIFAR_STD))
    val_logits = calibrate.logits_of(model, config, val_x)
    test_logits, test_y = calibrate.logits_of(model, config, cifar.test_images), torch.from_numpy(cifar.test_labels)
    config = replace(config, **calibrate.fit(val_logits, torch.from_numpy(val_y)))
    command = "python -m train.finetune " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    tuned = {"epochs": args.epochs, "lr": args.lr, "lam": args.lam, "blend": args.blend, "seed": args.seed,
             "outlier_pictures": len(outliers), "minutes": round(minutes, 1), "hardware": hardware(),
             "outliers_sha256": hashlib.sha256(np.ascontiguousarray(outliers).tobytes()).hexdigest(),
             "command": command, "started_from": str(args.weights)}
    rule, flagged = Rule(model, config), {}
    for name, path in (s.split("=", 1) for s in args.score):
        with torch.inference_mode():
            margins = rule(torch.from_numpy(np.load(path)["images"]))[1]
        flagged[name] = (len(margins), float((margins > 0).double().mean()))
    result = replace(metrics, **score(test_logits, test_y, cifar.classes),
                     **calibrate.figures(rule, test_logits, test_y),
                     val_accuracy=float((val_logits.argmax(1).numpy() == val_y).mean()), finetune=tuned,
                     outliers_flagged={k: v[1] for k, v in flagged.items()} or None,
                     outliers_pictures={k: v[0] for k, v in flagged.items()} or None)
    write_folder(args.out, model, config, result)
    print(f"test accuracy {result.test_accuracy:.2%} (was {metrics.test_accuracy:.2%}) | ECE {result.ece:.2%} | "
          f"unsure on {result.unsure_rate:.1%} of the test split | {minutes:.1f} min | wrote {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
