"""Time to >= 90% test accuracy on one GPU: our recipe for the seed CNN against airbench94, same run.

    python -m benchmarks.train_speed --data ../shared/data/cifar10-jpeg.tar.gz --seeds 0 1 2

For each seed it trains our recipe (``train.recipe.fit`` with ``python -m train``'s defaults, or the
``--epochs`` given) and the reference, the ``airbench`` package's ``train94()`` on the same pictures
(written as ``<tmp>/cifar10/{train,test}.pt``, the files its loader reads), then scores both on the
test split (ours with :func:`cifar_model.tta_logits`, the rule the app predicts with). Times are
from the first training step to the last (CUDA synchronised; evaluation and one-off compilation
excluded: each side is warmed up first). Prints per-seed lines, mean and spread,
and the ratios ours / reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cifar_model import CIFAR_MEAN, CIFAR_STD, tta_logits
from train import data as datasets
from train.recipe import Net, TrainConfig, fit, split_train_val


def ours(cfg: TrainConfig, cifar, seeds: list[int], device, net: Net) -> list[tuple[float, float]]:
    xt, yt, xv, yv = split_train_val(cifar.train_images, cifar.train_labels, cfg.val_size, 0)
    test_x = torch.from_numpy(cifar.test_images).to(device)
    test_y = torch.from_numpy(cifar.test_labels).to(device)
    results = []
    for seed in seeds:
        model, _, seconds = fit(replace(cfg, seed=seed), xt, yt, None, None, device, progress=False, net=net)
        with torch.no_grad():  # the rule the app predicts with
            logits = tta_logits(model.eval(), test_x, CIFAR_MEAN, CIFAR_STD)
        acc = (logits.argmax(1) == test_y).float().mean().item()
        results.append((seconds, acc))
        print(f"ours   seed {seed}: {seconds:6.2f}s  test acc {acc:.2%}  ({cfg.epochs} epochs, {len(xt):,} train)",
              flush=True)
    return results


def reference(cifar, seeds: list[int]) -> list[tuple[float, float]]:
    try:
        import airbench
    except ImportError:
        print("reference skipped: `pip install airbench==0.1.8` for the comparison", flush=True)
        return []
    work = Path(tempfile.mkdtemp())
    (work / "cifar10").mkdir()
    splits = (("train", cifar.train_images, cifar.train_labels), ("test", cifar.test_images, cifar.test_labels))
    for split, x, y in splits:
        torch.save({"images": torch.from_numpy(x), "labels": torch.from_numpy(y), "classes": cifar.classes},
                   work / "cifar10" / f"{split}.pt")
    cwd = os.getcwd()
    os.chdir(work)  # airbench's loaders read ./cifar10/*.pt
    try:
        hyp = airbench.lib_airbench94.hyp
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"],
                                      altflip=True)
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        airbench.train94(loader, run=-1, verbose=False)  # its own warm-up
        results = []
        for seed in seeds:
            torch.manual_seed(seed)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model = airbench.train94(loader, verbose=False)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            acc = airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
            results.append((seconds, acc))
            print(f"airbench94 seed {seed}: {seconds:6.2f}s  test acc {acc:.2%}  (its own net, flip+translate TTA)",
                  flush=True)
        return results
    finally:
        os.chdir(cwd)


def summary(name: str, rows: list[tuple[float, float]]) -> str:
    t = [r[0] for r in rows]
    a = [r[1] for r in rows]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    return (f"{name:<28} time {statistics.mean(t):6.2f}s ± {sd(t):.2f} (min {min(t):.2f}, max {max(t):.2f})"
            f" | acc {statistics.mean(a):.2%} ± {sd(a):.2%} (min {min(a):.2%})"
            f" | runs >= 90%: {sum(x >= 0.9 for x in a)}/{len(a)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="torchvision")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, nargs="+", default=[TrainConfig.epochs], help="one or more epoch counts")
    p.add_argument("--val-size", type=int, default=0,
                   help="held-out pictures (default 0: all 50,000, as the reference trains)")
    p.add_argument("--no-reference", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("This benchmark needs a CUDA GPU.")
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cifar = datasets.load(args.data)
    print(f"{torch.cuda.get_device_name(0)} | torch {torch.__version__} | data {cifar.source}", flush=True)
    ref = [] if args.no_reference else reference(cifar, args.seeds)
    lines = [summary("airbench94 (reference)", ref)] if ref else []
    net = Net(TrainConfig(), device)
    xt, yt, _, _ = split_train_val(cifar.train_images, cifar.train_labels, args.val_size, 0)
    fit(TrainConfig(epochs=1, val_size=args.val_size), xt, yt, None, None, device, progress=False, net=net)  # compile
    for epochs in args.epochs:
        rows = ours(TrainConfig(epochs=epochs, val_size=args.val_size), cifar, args.seeds, device, net)
        lines.append(summary(f"ours, {epochs} epochs", rows))
        if ref:
            ratio = statistics.mean(r[0] for r in rows) / statistics.mean(r[0] for r in ref)
            lines.append(f"{'':<28} time ratio ours / reference: {ratio:.2f}x")
    print("\n".join(["", "summary (mean ± stdev over seeds)", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
