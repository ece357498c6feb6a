"""Training throughput of the real training path (DataModule -> LightningModule -> Trainer).

    python benchmarks/train_speed.py [DATA_DIR] [--steps 30]

Prints images/s and the implied time of one epoch over FER-2013's 28,709 training faces for the
CPU set-ups (per-image albumentations in workers vs batched augmentation in the main process;
fp32 with and without channels-last and torch.compile, bf16 with channels-last) and, when a GPU is
present, the GPU recipes. Without DATA_DIR (or $EMO_DATA_DIR) it times random faces: speed does
not depend on what the faces show.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from emo.cli import compose
from emo.data import FER2013DataModule
from emo.models.module import EmoModule

TRAIN_FACES = 28_709


class StepTimer(L.Callback):
    """Wall time from the end of the warm-up steps to the end of the run."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.steps = warmup, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.steps += 1

    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.elapsed = time.perf_counter() - self.start


def synthetic_csv(root: Path, n: int = 6000) -> Path:
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for i in range(n):
        usage = "Training" if i < n - 200 else ("PublicTest" if i < n - 100 else "PrivateTest")
        lines.append(f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}")
    (root / "fer2013.csv").write_text("\n".join(lines))
    return root


def measure(
    data_dir: str,
    arch: str,
    *,
    batch: int,
    device_augment: bool,
    precision: str,
    channels_last: bool,
    compile: bool = False,
    steps: int = 30,
    warmup: int = 5,
) -> float:
    dm = FER2013DataModule(
        data_dir=data_dir,
        augment=compose(["augment=strong"]).data.augment,
        device_augment=device_augment,
        batch_size=batch,
        num_workers=0 if device_augment else 2,
    )
    model = EmoModule(
        arch=arch,
        channels_last=channels_last,
        compile=compile,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True),
    )
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=warmup + steps,
        limit_val_batches=0,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer.steps * batch / timer.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=os.environ.get("EMO_DATA_DIR"))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per set-up")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    data_dir = args.data_dir or str(synthetic_csv(Path(tmp.name)))
    setups = [  # (label, arch, batch, device_augment, precision, channels_last, compile)
        ("cnn3, albumentations in 2 workers, fp32", "cnn3", 64, False, "32-true", False, False),
        ("vgg_s, albumentations in 2 workers, fp32", "vgg_s", 128, False, "32-true", False, False),
        ("vgg_s, batched augmentation, fp32", "vgg_s", 128, True, "32-true", False, False),
        ("vgg_s, batched augmentation, fp32 + channels-last", "vgg_s", 128, True, "32-true", True, False),
        (
            "vgg_s, batched augmentation, fp32 + channels-last + compile",
            "vgg_s",
            128,
            True,
            "32-true",
            True,
            True,
        ),
        ("vgg_s, batched augmentation, bf16 + channels-last", "vgg_s", 128, True, "bf16-mixed", True, False),
    ]
    if torch.cuda.is_available():
        for arch in ("vgg_s", "vgg_fer", "resnet18_fer"):
            setups.append(
                (
                    f"{arch} on GPU, resident data, bf16 + channels-last + compile",
                    arch,
                    256,
                    True,
                    "bf16-mixed",
                    True,
                    True,
                )
            )
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} threads"
    )
    rows = []
    for label, arch, batch, dev_aug, precision, cl, comp in setups:
        ips = measure(
            data_dir,
            arch,
            batch=batch,
            device_augment=dev_aug,
            precision=precision,
            channels_last=cl,
            compile=comp,
            steps=args.steps,
        )
        rows.append((label, batch, ips))
    base = rows[1][2]
    print(
        f"\ndevice: {device}; data: {'FER-2013' if args.data_dir else 'random faces'}; {args.steps} timed steps each"
    )
    print("| set-up | batch | images/s | epoch (28,709 faces) | vs vgg_s workers fp32 |")
    print("|---|---|---|---|---|")
    for label, batch, ips in rows:
        print(f"| {label} | {batch} | {ips:,.0f} | {TRAIN_FACES / ips:.1f} s | {ips / base:.2f}x |")


if __name__ == "__main__":
    main()
