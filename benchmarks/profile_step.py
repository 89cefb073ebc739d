"""Where a training step's time goes on the GPU: ms per step for a few settings, and the top kernels.

    python -m benchmarks.profile_step --data ../shared/data/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch

from train import data as datasets
from train.recipe import Net, TrainConfig, fit

from .train_sweep import parse


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="torchvision")
    p.add_argument("--configs", nargs="+", default=["batch_size=1024"])
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top kernels for the first config")
    args = p.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cifar = datasets.load(args.data)
    x, y = cifar.train_images[:20480], cifar.train_labels[:20480]
    for i, spec in enumerate(args.configs):
        cfg = replace(TrainConfig(val_size=0, epochs=2), **parse(spec))
        net = Net(cfg, device)
        fit(replace(cfg, epochs=1), x, y, None, None, device, progress=False, net=net)  # compile, warm up
        _, _, seconds = fit(cfg, x, y, None, None, device, progress=False, net=net)
        steps = cfg.epochs * (len(x) // cfg.batch_size)
        print(f"{spec:<60} {1000 * seconds / steps:7.2f} ms/step  {len(x) * cfg.epochs / seconds:9.0f} img/s",
              flush=True)
        if args.profile and i == 0:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fit(replace(cfg, epochs=1), x, y, None, None, device, progress=False, net=net)
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
