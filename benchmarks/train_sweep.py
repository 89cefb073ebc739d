"""Tune the recipe on the held-out validation split (never the test split), one line per setting.

    python -m benchmarks.train_sweep --data ../shared/data/cifar10-jpeg.tar.gz \
        --configs "epochs=12" "epochs=16,lr=0.4" "epochs=16,whiten=False" --seeds 0 1

Each config is ``TrainConfig`` fields overriding ``python -m train``'s defaults. Prints validation
accuracy (flip TTA, as the app predicts) and training time (first step to last, compile excluded).
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

from train import data as datasets
from train.recipe import Net, TrainConfig, fit, split_train_val


def parse(spec: str) -> dict:
    out = {}
    for part in filter(None, spec.split(",")):
        key, value = part.split("=", 1)
        out[key.strip()] = ast.literal_eval(value.strip())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="torchvision")
    p.add_argument("--configs", nargs="+", default=[""])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--best-flags", type=Path, help="write the best config (by validation) as python -m train flags")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    cifar = datasets.load(args.data)
    base = TrainConfig()
    xt, yt, xv, yv = split_train_val(cifar.train_images, cifar.train_labels, base.val_size, 0)
    nets: dict[tuple, Net] = {}
    results: list[tuple[float, str]] = []
    for spec in args.configs:
        cfg = replace(base, **parse(spec))
        key = (cfg.dropout, cfg.compile, cfg.compile_mode, cfg.channels_last, cfg.batch_size)
        if key not in nets:
            nets[key] = Net(cfg, device)
            fit(replace(cfg, epochs=1), xt, yt, None, None, device, progress=False, net=nets[key])  # warm-up
        accs, times = [], []
        for seed in args.seeds:
            _, hist, seconds = fit(replace(cfg, seed=seed), xt, yt, xv, yv, device, progress=False, net=nets[key])
            accs.append(hist[-1].val_acc)
            times.append(seconds)
        print(f"{spec or 'defaults':<55} val acc {statistics.mean(accs):.2%} (min {min(accs):.2%})"
              f"  time {statistics.mean(times):6.2f}s  [{len(args.seeds)} seeds]", flush=True)
        results.append((statistics.mean(accs), spec))
    if args.best_flags:
        acc, spec = max(results)
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in parse(spec).items() if k != "epochs")
        args.best_flags.write_text(flags + "\n")
        print(f"best by validation: {spec or 'defaults'} ({acc:.2%}) -> {flags or '(no flags)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
