"""``python -m train``: fit the seed CNN, calibrate it on the held-out pictures, score it once on the
test split, write a Hub-ready folder, and optionally push it to the Hugging Face Hub.

    python -m train --data ../shared/data/cifar10-jpeg.tar.gz --out weights
    python -m train --data torchvision --out runs/cifar --push-to-hub you/cifar10-seed-cnn
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from cifar_model import CIFAR_MEAN, CIFAR_STD, Config, Metrics, Rule, count_parameters

from . import calibrate
from . import data as datasets
from .recipe import Net, TrainConfig, fit, per_epoch_line, split_train_val
from .report import hardware, score, write_folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="torchvision",
                   help="'torchvision' (download the original CIFAR-10) or an ImageFolder tree or .tar/.tar.gz of one")
    p.add_argument("--out", type=Path, default=Path("runs/cifar10-seed-cnn"),
                   help="folder to write (default %(default)s)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub model repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    p.add_argument("--limit", type=int, default=0, help="use only this many training pictures (quick trials)")
    p.add_argument("--cache-dir", type=Path, default=datasets.DEFAULT_CACHE,
                   help="decoded-data cache (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, only the per-epoch lines")
    for f in fields(TrainConfig):
        flag, value = "--" + f.name.replace("_", "-"), f.default
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            p.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        print("No GPU: training on the CPU with bf16 autocast. Expect minutes per epoch, not seconds.", flush=True)

    cifar = datasets.load(args.data, args.cache_dir)
    train_x, train_y, val_x, val_y = split_train_val(cifar.train_images, cifar.train_labels, cfg.val_size, cfg.seed)
    if args.limit:
        train_x, train_y = train_x[: args.limit], train_y[: args.limit]
        cfg.batch_size = min(cfg.batch_size, len(train_x))
    print(f"data: {cifar.source}: {len(train_x):,} train / {len(val_x):,} val / {len(cifar.test_images):,} test"
          f" | device {device} | {cfg.epochs} epochs", flush=True)

    net = Net(cfg, device)
    compile_seconds = None
    if net.forward is not net.model:  # pay torch.compile's one-off cost before the clock starts
        t0 = time.perf_counter()
        fit(replace(cfg, epochs=1), train_x, train_y, None, None, device, progress=False, net=net)
        compile_seconds = time.perf_counter() - t0
        print(f"compiled and warmed up in {compile_seconds:.1f}s (not counted as training time)", flush=True)
    model, history, seconds = fit(cfg, train_x, train_y, val_x, val_y, device,
                                  log=lambda e: print(per_epoch_line(e, cfg.epochs), flush=True),
                                  progress=not args.no_progress, net=net)

    # Calibration and the unsure rule: fitted on the held-out pictures, never on the test split.
    config = Config(list(cifar.classes), list(CIFAR_MEAN), list(CIFAR_STD))
    test_logits, test_y = calibrate.logits_of(model, config, cifar.test_images), torch.from_numpy(cifar.test_labels)
    if len(val_x):
        config = replace(config, **calibrate.fit(calibrate.logits_of(model, config, val_x), torch.from_numpy(val_y)))
    measured = calibrate.figures(Rule(model, config), test_logits, test_y) if len(val_x) else {}
    metrics = Metrics(**score(test_logits, test_y, cifar.classes), dataset=cifar.test_name, data_source=cifar.source,
                      train_images=len(train_x), train_seconds=round(seconds, 2), hardware=hardware(),
                      parameters=count_parameters(model), torch=torch.__version__, config=asdict(cfg),
                      history=[vars(h) for h in history], val_accuracy=history[-1].val_acc if len(val_x) else None,
                      val_images=len(val_x), skipped_images=cifar.skipped, repo_id=args.push_to_hub,
                      compile_seconds=round(compile_seconds, 1) if compile_seconds else None, command=command,
                      **measured)
    write_folder(args.out, model.cpu(), config, metrics)
    print(f"test accuracy {metrics.test_accuracy:.2%} ({cifar.test_name})"
          + (f" | ECE {metrics.ece_uncalibrated:.2%} -> {metrics.ece:.2%} at T={config.temperature:.3f}"
             if measured else "")
          + f" | trained in {seconds:.1f}s | wrote {args.out}/", flush=True)
    if args.push_to_hub:
        return _push(args.out, args.push_to_hub, args.private)
    return 0


def _push(folder: Path, repo_id: str, private: bool) -> int:
    from .publish import PublishError, push_folder

    try:
        sha = push_folder(folder, repo_id, private=private)
    except PublishError as err:
        print(f"push failed: {err}", file=sys.stderr)
        return 3
    print(f"pushed {repo_id} at commit {sha}\n"
          f'load it with: Classifier.from_pretrained("{repo_id}", revision="{sha}")', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
