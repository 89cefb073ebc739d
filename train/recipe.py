"""The fast recipe: the seed CNN fitted with the whole dataset on the device.

Data lives on the device as uint8 and is normalised and augmented there a whole epoch at a time
(flip, translate by reflect-padding and cropping, optional cutout), so no step waits on the CPU.
Mixed precision (bf16) and channels-last run the convolutions on the tensor cores; SGD with
Nesterov momentum follows a one-cycle (triangular) learning-rate schedule made for few epochs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifar_model import CIFAR_MEAN, CIFAR_STD, CifarCNN, normalize, tta_logits


@dataclass
class TrainConfig:
    epochs: int = 40  # full passes over the training images
    batch_size: int = 1024  # pictures per step (the last partial batch of an epoch is dropped)
    lr: float = 0.4  # peak learning rate of the one-cycle schedule (mean loss over the batch)
    lr_start: float = 0.1  # schedule starts at lr * lr_start ...
    lr_peak_at: float = 0.25  # ... rises to lr at this fraction of the steps ...
    lr_end: float = 0.0  # ... and falls to lr * lr_end at the end
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # on convolution and linear weights only, not biases or BN
    label_smoothing: float = 0.2  # soft targets: calmer probabilities, better accuracy in few epochs
    dropout: float = 0.0  # before the last linear layer (the seed's dropout; 0 trains fastest)
    translate: int = 4  # random shift of up to this many pixels (reflect padding)
    cutout: int = 8  # side of a random square zeroed in each training picture (0: off)
    ema: float = 0.0  # if > 0, evaluate an exponential moving average of the weights (per step)
    whiten: bool = True  # initialise conv1 as a ZCA-style whitening of 3x3 patches (airbench's trick)
    val_size: int = 5000  # training pictures held out for validation (0: train on all 50,000)
    seed: int = 0  # seeds torch and the validation split
    compile: bool = True  # torch.compile the model (on CUDA; pays after its one-off compile)
    compile_mode: str = "reduce-overhead"  # CUDA graphs: 5.1 vs 7.0 ms a step (benchmarks/profile_step.py)
    channels_last: bool = True  # NHWC memory layout for the convolutions


def split_train_val(images: np.ndarray, labels: np.ndarray, val_size: int, seed: int):
    """A fixed random hold-out of ``val_size`` training pictures (the test split stays untouched)."""
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = order[:val_size], order[val_size:]
    return images[train], labels[train], images[val], labels[val]


def _augment(x: torch.Tensor, translate: int, cutout: int) -> torch.Tensor:
    """Random flip, translation and cutout of a whole N x 3 x 32 x 32 batch, on its device."""
    n, _, h, w = x.shape
    flip = torch.rand(n, device=x.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if translate:
        r = translate
        padded = F.pad(x, (r, r, r, r), mode="reflect")
        # Gather-free crop: one masked copy per row shift, then per column shift (2(2r+1) copies).
        dy = torch.randint(0, 2 * r + 1, (n,), device=x.device)
        dx = torch.randint(0, 2 * r + 1, (n,), device=x.device)
        rows = torch.empty((n, x.shape[1], h, w + 2 * r), device=x.device, dtype=x.dtype)
        for s in range(2 * r + 1):
            m = dy == s
            rows[m] = padded[m, :, s:s + h, :]
        for s in range(2 * r + 1):
            m = dx == s
            x[m] = rows[m, :, :, s:s + w]
    if cutout:
        cy = torch.randint(0, h - cutout + 1, (n, 1, 1, 1), device=x.device)
        cx = torch.randint(0, w - cutout + 1, (n, 1, 1, 1), device=x.device)
        ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
        hole = (ys >= cy) & (ys < cy + cutout) & (xs >= cx) & (xs < cx + cutout)
        x = x.masked_fill(hole, 0.0)
    return x


@torch.no_grad()
def _whiten_conv1(conv: nn.Conv2d, x: torch.Tensor, eps: float = 5e-4) -> None:
    """Set conv1 to whiten 3x3 patches: 27 eigenvectors of their covariance, scaled by 1/sqrt(eig),
    and their negatives (54 filters); the remaining filters keep their random init."""
    patches = x.float().unfold(2, 3, 1).unfold(3, 3, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 27)
    cov = patches.T @ patches / len(patches)
    eigval, eigvec = torch.linalg.eigh(cov)
    filters = (eigvec.T / torch.sqrt(eigval + eps).unsqueeze(1)).reshape(27, 3, 3, 3)
    w = torch.cat([filters, -filters])
    conv.weight[: len(w)] = w.to(conv.weight.dtype)
    conv.bias.zero_()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.ndim > 1]  # conv and linear weights
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases, BatchNorm
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    peak = max(1, int(cfg.lr_peak_at * total))
    if step < peak:
        frac = cfg.lr_start + (1 - cfg.lr_start) * step / peak
    else:
        frac = 1 + (cfg.lr_end - 1) * (step - peak) / max(1, total - peak)
    return cfg.lr * frac


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of uint8 ``images`` classified right by the library's inference rule (flip-averaged logits)."""
    was_training = model.training
    model.eval()
    hits = sum(int((tta_logits(model, x, CIFAR_MEAN, CIFAR_STD).argmax(1) == y).sum())
               for x, y in zip(images.split(2500), labels.split(2500)))
    model.train(was_training)
    return hits / len(labels)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float | None
    elapsed: float  # seconds of training so far (evaluation excluded)


class Net:
    """A CifarCNN on a device with its (optionally compiled) forward, reusable across runs: the
    one-off compile is paid once per process, and :meth:`reset` re-initialises it for a new seed."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.device = device
        self.model = CifarCNN(dropout=cfg.dropout).to(device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        compiled = cfg.compile and device.type == "cuda"
        self.forward = torch.compile(self.model, mode=cfg.compile_mode) if compiled else self.model

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        for m in self.model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()  # BatchNorm's also resets its running statistics


def fit(cfg: TrainConfig, train_images: np.ndarray, train_labels: np.ndarray,
        val_images: np.ndarray | None, val_labels: np.ndarray | None,
        device: torch.device, log=None, progress: bool = True, net: Net | None = None,
        ) -> tuple[CifarCNN, list[EpochLog], float]:
    """Train a CifarCNN from a fresh initialisation (``net``'s, if given, to reuse its compile).

    Returns the model (fp32, eval mode, on ``device``), the per-epoch log and the training time in
    seconds: from the first step (whitening included) to the last, evaluation excluded, with the
    device synchronised.
    """
    net = net or Net(cfg, device)
    net.reset(cfg.seed)
    model = net.model
    cuda = device.type == "cuda"
    mean, std = CIFAR_MEAN, CIFAR_STD
    xs = torch.from_numpy(train_images).to(device)
    ys = torch.from_numpy(train_labels).to(device)
    xv = torch.from_numpy(val_images).to(device) if val_images is not None and len(val_images) else None
    yv = torch.from_numpy(val_labels).to(device) if xv is not None else None
    _sync(device)
    t_init = time.perf_counter()
    if cfg.whiten:
        _whiten_conv1(model.features[0], normalize(xs[:5000], mean, std))
    steps_per_epoch = len(xs) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          fused=cuda, foreach=None if cuda else True)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    step_fn = _make_step(net.forward, opt, cfg, cuda)
    dtype = torch.bfloat16
    history: list[EpochLog] = []
    _sync(device)
    train_time = time.perf_counter() - t_init
    bar = _progress(total) if progress else None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        _sync(device)
        t0 = time.perf_counter()
        model.train()
        with torch.no_grad():
            epoch_x = _augment(normalize(xs, mean, std).to(dtype), cfg.translate, cfg.cutout)
            epoch_x = epoch_x.contiguous(memory_format=net.memory_format)
        order = torch.randperm(len(xs), device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, cfg)
            loss, hits = step_fn(epoch_x[idx], ys[idx])
            loss_sum += loss.detach()
            correct += hits
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            if bar is not None:
                bar.update(1)
        _sync(device)
        train_time += time.perf_counter() - t0
        n_seen = steps_per_epoch * cfg.batch_size
        val_acc = None
        if xv is not None and (log is not None or epoch == cfg.epochs):
            val_acc = accuracy(ema.module if ema is not None else model, xv, yv)
        entry = EpochLog(epoch, loss_sum.item() / steps_per_epoch, correct.item() / n_seen, val_acc, train_time)
        history.append(entry)
        if log is not None:
            log(entry)
    if bar is not None:
        bar.close()
    final = ema.module if ema is not None else model
    return final.float().eval(), history, train_time


def _make_step(forward, opt: torch.optim.Optimizer, cfg: TrainConfig, cuda: bool):
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    device_type = "cuda" if cuda else "cpu"

    def step(x: torch.Tensor, y: torch.Tensor):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            logits = forward(x)
            loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss, (logits.argmax(1) == y).sum()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", leave=False, dynamic_ncols=True)



def per_epoch_line(e: EpochLog, epochs: int) -> str:
    """The one fixed-format line printed per epoch."""
    val = f"{e.val_acc:6.2%}" if e.val_acc is not None else "   n/a"
    return (f"epoch {e.epoch:3d}/{epochs:<3d} | train loss {e.train_loss:.4f} | train acc {e.train_acc:6.2%}"
            f" | val acc {val} | time {e.elapsed:7.2f}s")


__all__ = ["TrainConfig", "fit", "accuracy", "split_train_val", "per_epoch_line", "EpochLog", "Net"]
