"""Slide a model along the two yardsticks' trade-off with one number, chosen on PublicTest.

    python research/prior_shift.py emo/weights/vgg_s_people.ckpt --out runs/vgg_s_people_ps.ckpt
    python research/prior_shift.py runs/NAME/NAME.ckpt --out X.ckpt --min-accuracy 0.70 --tta flip

FER+'s majority labels use the seven classes in other proportions than FER-2013's labels (on the
Training faces: neutral 36.5% against 17.3%, fear 2.3% against 14.3%). Adding
``lam * log(FER+ share / FER-2013 share)`` to a model's logits moves its answers towards what
people say (lam > 0) or towards FER-2013's labels (lam < 0). The script scores lam from
``--low`` to ``--high`` in steps of ``--step`` on PublicTest with the model's TTA (every view's
logits computed once), keeps the lam that agrees with people best among those that keep
``--min-accuracy`` FER-2013 PublicTest accuracy (the default model's rule; ties: the smallest
shift), and writes the checkpoint with ``lam * shift`` added to its classifier's bias. The
network is unchanged otherwise, so every backend (torch, ONNX, int8) and TTA runs it as it is;
the shift is recorded in the file (``emo_prior_shift``). PrivateTest is never read: score the
result once with ``scripts/index_weights.py`` after packing it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get("EMO_DATA_DIR", str(ROOT / "data" / "fer2013"))


def class_shift(train_labels: torch.Tensor, train_people: torch.Tensor, classes: int) -> torch.Tensor:
    """log(FER+ majority share / FER-2013 label share) of each class on the training faces (a
    class neither source uses gets 0)."""
    label_share = torch.bincount(train_labels, minlength=classes).float()
    people_share = torch.bincount(train_people[train_people >= 0], minlength=classes).float()
    label_share, people_share = label_share / label_share.sum(), people_share / people_share.sum()
    ok = (label_share > 0) & (people_share > 0)
    return torch.where(ok, people_share.clamp_min(1e-12).log() - label_share.clamp_min(1e-12).log(), 0.0)


def publictest_with_shift(data_dir: str, **preprocess):
    """(the FER-2013 data module with FER+ votes, set up; the class shift measured on its Training
    faces; PublicTest's FER-2013 labels; PublicTest's FER+ majority, -1 where none of the seven).
    Exits in one line when FER-2013 or its FER+ votes are missing. ``preprocess``: mean and std."""
    from emo.data import FER2013DataModule
    from emo.data.fer2013 import FER2013_CLASSES

    if not Path(data_dir).is_dir():
        sys.exit(f"FER-2013 not found in {data_dir}: set EMO_DATA_DIR (see the README's 'Getting FER-2013')")
    dm = FER2013DataModule(data_dir=data_dir, classes=FER2013_CLASSES, augment=None, **preprocess)
    dm.setup()
    if "train" not in dm.people or "val" not in dm.people:
        sys.exit(
            f"no FER+ votes (fer2013new.csv) beside FER-2013 in {data_dir}: agreement with people needs them"
        )
    shift = class_shift(
        torch.as_tensor(dm.datasets["train"].labels),
        torch.as_tensor(dm.people["train"]),
        len(FER2013_CLASSES),
    )
    return dm, shift, torch.as_tensor(dm.datasets["val"].labels), torch.as_tensor(dm.people["val"])


@torch.no_grad()
def view_logits(model, faces: torch.Tensor, tta: str, batch_size: int = 512) -> torch.Tensor:
    """Each TTA view's logits (V, N, C), as ``EmoModule.predict_proba`` computes them."""
    from emo.models.module import tta_views

    out = []
    for i in range(0, len(faces), batch_size):
        views = tta_views(faces[i : i + batch_size], tta)
        v, b = views.shape[:2]
        out.append(model(views.flatten(0, 1)).float().view(v, b, -1))
    return torch.cat(out, 1)


def scan(
    logits: torch.Tensor,
    shift: torch.Tensor,
    labels: torch.Tensor,
    people: torch.Tensor,
    lams: list[float],
) -> list[tuple[float, float, float]]:
    """(lam, FER-2013 accuracy, agreement with people) of the shifted logits for each lam."""
    counted = people >= 0
    rows = []
    for lam in lams:
        pred = (logits + lam * shift).softmax(-1).mean(0).argmax(1)
        accuracy = (pred == labels).float().mean().item()
        agreement = (pred[counted] == people[counted]).float().mean().item()
        rows.append((lam, accuracy, agreement))
    return rows


def choose(rows: list[tuple[float, float, float]], min_accuracy: float) -> tuple[float, float, float] | None:
    """The row that agrees with people best at >= ``min_accuracy``; ties: the smallest shift."""
    kept = [r for r in rows if r[1] >= min_accuracy]
    return max(kept, key=lambda r: (r[2], -abs(r[0]))) if kept else None


def final_linear(model) -> str:
    """The state-dict key of the bias of the network's last linear layer (its class logits)."""
    names = [n for n, m in model.net.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise SystemExit(f"{model.hparams.arch} has no linear classifier to shift")
    layer = model.net.get_submodule(names[-1])
    if layer.bias is None or layer.out_features != len(model.class_names):
        raise SystemExit(
            f"{model.hparams.arch}'s last linear layer does not give the class logits with a bias"
        )
    return f"net.{names[-1]}.bias"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="a seven-class checkpoint (a run's, or a bundled file)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the shifted checkpoint")
    parser.add_argument("--tta", default="flip", choices=["none", "flip", "tencrop"])
    parser.add_argument(
        "--min-accuracy", type=float, default=0.70, help="FER-2013 PublicTest accuracy to keep"
    )
    parser.add_argument("--low", type=float, default=-1.0)
    parser.add_argument("--high", type=float, default=1.5)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--lam", type=float, help="write this shift instead of choosing one (still scored)")
    parser.add_argument("--data-dir", default=DATA_DIR)
    args = parser.parse_args(argv)

    from emo.data.fer2013 import FER2013_CLASSES
    from emo.errors import EmoError
    from emo.evaluate import split_faces
    from emo.models.checkpoint import read_checkpoint
    from emo.models.ensemble import Ensemble
    from emo.models.module import load_checkpoint

    try:
        model = load_checkpoint(args.ckpt)
    except EmoError as err:
        sys.exit(str(err))
    if isinstance(model, Ensemble):
        sys.exit(f"{args.ckpt} is an ensemble: shift one network's checkpoint")
    if list(model.class_names) != list(FER2013_CLASSES) or model.labels != "fer2013":
        sys.exit(
            f"{args.ckpt} predicts {model.class_names} ({model.labels}): the shift is for FER-2013's seven"
        )
    dm, shift, labels, people = publictest_with_shift(
        args.data_dir, mean=model.preprocess.mean, std=model.preprocess.std
    )
    logits = view_logits(model, split_faces(dm, "val"), args.tta)
    steps = round((args.high - args.low) / args.step)
    lams = {round(args.low + i * args.step, 6) for i in range(steps + 1)} | {0.0}
    rows = scan(logits, shift, labels, people, sorted(lams | ({args.lam} if args.lam is not None else set())))
    if args.lam is None:
        best = choose(rows, args.min_accuracy)
    else:
        best = next(r for r in rows if r[0] == args.lam)

    print("class shift (log FER+ share / FER-2013 share, Training faces):")
    print("  " + ", ".join(f"{c} {s:+.2f}" for c, s in zip(FER2013_CLASSES, shift.tolist())))
    print(
        f"\nPublicTest ({len(labels)} faces), TTA {args.tta}:\n| lam | FER-2013 accuracy | agreement |\n|---|---|---|"
    )
    for lam, acc, agree in rows:
        mark = (" **chosen**" if best and lam == best[0] else "") + (" (as trained)" if lam == 0 else "")
        print(f"| {lam:+.2f}{mark} | {acc:.2%} | {agree:.2%} |")
    if best is None:
        sys.exit(f"no shift keeps {args.min_accuracy:.0%} FER-2013 PublicTest accuracy: nothing written")
    lam = best[0]
    raw = read_checkpoint(args.ckpt)
    key = final_linear(model)
    bias = raw["state_dict"][key]
    raw["state_dict"][key] = (bias.float() + lam * shift).to(bias.dtype)
    raw["emo_prior_shift"] = {
        "lambda": lam,
        "shift": shift.tolist(),
        "tta": args.tta,
        "min_accuracy": args.min_accuracy,
        "publictest": {"accuracy": best[1], "agreement": best[2]},
        "from": Path(args.ckpt).name,
    }
    raw["emo_metrics"] = {}  # the source's numbers are not the shifted model's: score it again
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, args.out)
    as_trained = next(r for r in rows if r[0] == 0.0)
    print(
        f"\nchosen lam {lam:+.2f}: {best[1]:.2%} / {best[2]:.2%} agreement (as trained {as_trained[1]:.2%} / "
        f"{as_trained[2]:.2%}); wrote {args.out}"
    )


if __name__ == "__main__":
    main()
