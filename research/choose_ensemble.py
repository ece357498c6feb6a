"""Choose a bundled ensemble's members and TTA on PublicTest, from stored probabilities.

    python research/choose_ensemble.py                      # the bundled vgg_s + every 7-class run
    python research/choose_ensemble.py vgg_s vgg_s_ba1 runs/x/best.ckpt --max-members 4
    python research/choose_ensemble.py --out runs/ensemble_choice.json

A member is a queue run's name (its committed ``runs/NAME/val_probs.pt``: PublicTest
probabilities with TTA none and flip), a bundled model's name, or a checkpoint path (both scored
on PublicTest once here). Every subset of at least two members (up to ``--max-members``) and
every TTA is scored by the mean of its members' probabilities, against the FER-2013 labels and
the FER+ majority (agreement with people); subsets over the 25 MB bundle limit (fp16, or int8 with --int8) are left
out. The table shows the best subsets and each member alone. PrivateTest is never read.

The winner is chosen on PublicTest accuracy among 2^k subsets, so its PublicTest figure is
optimistic: score it once on PrivateTest after packing it (``python -m emo.models.pack A B ...
ensemble --fp16``, then ``python -m emo.evaluate ckpt_path=... split=test tta=T``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
DATA_DIR = os.environ.get("EMO_DATA_DIR", str(ROOT / "data" / "fer2013"))
MAX_MB = 25.0


@dataclass
class Member:
    name: str
    ckpt: Path  # what the ensemble packs
    probs: dict[str, torch.Tensor]  # tta -> (N, C) PublicTest probabilities
    params: int


@dataclass
class Scored:
    members: tuple[str, ...]
    tta: str
    accuracy: float
    agreement: float | None
    params: int
    bytes_per_param: int = 2  # fp16; 1 for int8 weights (python -m emo.models.pack ... --int8)

    @property
    def mb(self) -> float:
        return self.params * self.bytes_per_param / 1e6


def rank(
    members: list[Member],
    labels: torch.Tensor,
    people: torch.Tensor | None = None,
    max_members: int = 5,
    max_mb: float = MAX_MB,
    bytes_per_param: int = 2,
) -> tuple[list[Scored], list[Scored]]:
    """(every subset of >= 2 members within ``max_mb``, best first; each member alone, best first).

    ``bytes_per_param``: what a packed weight takes (2: fp16; 1: int8, ``emo.weights --int8``).

    ``people``: each face's FER+ majority (-1: none of the classes), for agreement with people.
    Ties on accuracy go to fewer members, then to the higher agreement.
    """
    ttas = sorted(set.intersection(*(set(m.probs) for m in members)))
    probs = {(m.name, t): m.probs[t].float() for m in members for t in ttas}
    counted = None if people is None else people >= 0  # faces with a majority among the classes

    def scored(group: tuple[Member, ...], tta: str) -> Scored:
        # Accuracy and agreement alone (emo.report.metrics.score's definitions): tens of
        # thousands of subsets are ranked.
        pred = torch.stack([probs[m.name, tta] for m in group]).mean(0).argmax(1)
        accuracy = (pred == labels).float().mean().item()
        agreement = None
        if counted is not None and counted.any():
            agreement = (pred[counted] == people[counted]).float().mean().item()
        names = tuple(m.name for m in group)
        return Scored(names, tta, accuracy, agreement, sum(m.params for m in group), bytes_per_param)

    def key(s: Scored):
        return (-s.accuracy, len(s.members), -(s.agreement or 0.0))

    singles = sorted((scored((m,), t) for m in members for t in ttas), key=key)
    groups = [
        scored(g, t)
        for k in range(2, min(max_members, len(members)) + 1)
        for g in itertools.combinations(members, k)
        for t in ttas
    ]
    return sorted((g for g in groups if g.mb <= max_mb), key=key), singles


# ----------------------------------------------------------------------------- loading members
def load_member(spec: str, dm) -> Member:
    from emo.evaluate import split_probs
    from emo.models.module import load_checkpoint
    from emo.paths import WEIGHTS_DIR

    run = RUNS / spec
    if (run / "val_probs.pt").is_file() and (run / f"{spec}.ckpt").is_file():
        stored = torch.load(run / "val_probs.pt", map_location="cpu", weights_only=True)
        if list(stored["class_names"]) != list(dm.class_names):
            raise SystemExit(f"{spec}: its classes {stored['class_names']} are not FER-2013's seven")
        params = json.loads((run / "result.json").read_text())["params"]
        probs = {t: v for t, v in stored.items() if t != "class_names"}
        return Member(spec, run / f"{spec}.ckpt", probs, params)
    path = WEIGHTS_DIR / f"{spec}.ckpt" if (WEIGHTS_DIR / f"{spec}.ckpt").is_file() else Path(spec)
    if not path.is_file():
        raise SystemExit(
            f"{spec}: not a run in {RUNS} with val_probs.pt, a bundled model or a checkpoint file"
        )
    model = load_checkpoint(path)
    if list(model.class_names) != list(dm.class_names):
        raise SystemExit(f"{spec}: its classes {model.class_names} are not FER-2013's seven")
    probs = {t: split_probs(model, dm, "val", t) for t in ("none", "flip")}
    return Member(spec, path, probs, sum(p.numel() for p in model.parameters()))


def default_members() -> list[str]:
    """The bundled vgg_s and every finished seven-class run trained on FER-2013's labels."""
    names = ["vgg_s"]
    for result in sorted(RUNS.glob("*/result.json")):
        run = result.parent
        if (run / "val_probs.pt").is_file():
            classes = torch.load(run / "val_probs.pt", map_location="cpu", weights_only=True)["class_names"]
            if len(classes) == 7:
                names.append(run.name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="*", help="runs, bundled names or checkpoints (default: all)")
    parser.add_argument("--max-members", type=int, default=5)
    parser.add_argument("--top", type=int, default=10, help="rows of subsets to print")
    parser.add_argument(
        "--min-gain",
        type=float,
        default=0.3,
        help="points over the best single model before packing is suggested (default 0.3: ~11 faces; "
        "the best of many subsets beats it by a few faces by chance)",
    )
    parser.add_argument(
        "--max-mb",
        type=float,
        default=MAX_MB,
        help=f"size limit of a subset (fp16, or int8 with --int8) (default {MAX_MB:.0f}: the bundle's); a teacher ensemble "
        "whose probabilities become soft targets (python -m emo.distill) is never bundled: 0 for no limit",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="size subsets as int8 weights (1 byte a parameter, python -m emo.models.pack ... --int8; the "
        "probabilities ranked are the stored fp16 ones: score the winner once more after packing)",
    )
    parser.add_argument("--out", type=Path, help="write the ranking as JSON here")
    args = parser.parse_args()
    width = 1 if args.int8 else 2
    max_mb = args.max_mb or float("inf")

    from emo.data import FER2013DataModule
    from emo.data.fer2013 import FER2013_CLASSES

    if not Path(DATA_DIR).is_dir():
        sys.exit(f"FER-2013 not found in {DATA_DIR}: set EMO_DATA_DIR (see the README's 'Getting FER-2013')")
    dm = FER2013DataModule(data_dir=DATA_DIR, classes=FER2013_CLASSES, augment=None)
    dm.setup()
    labels = torch.as_tensor(dm.datasets["val"].labels)
    people = dm.people.get("val")
    people = None if people is None else torch.as_tensor(people)
    names = args.members or default_members()
    if len(names) < 2:
        sys.exit("an ensemble needs at least two members")
    members = [load_member(n, dm) for n in names]
    # Tens of thousands of small reductions: one thread is ~20x faster than two on a CPU that a
    # training shares (measured), and no slower on an idle one.
    torch.set_num_threads(1)
    groups, singles = rank(members, labels, people, args.max_members, max_mb, width)

    def row(s: Scored) -> str:
        agree = "—" if s.agreement is None else f"{s.agreement:.2%}"
        return f"| {' + '.join(s.members)} | {s.tta} | {s.accuracy:.2%} | {agree} | {s.params / 1e6:.2f} M | {s.mb:.1f} MB |"

    head = (
        f"| members | TTA | PublicTest acc | PublicTest agreement | params | {'int8' if args.int8 else 'fp16'} |\n"
        "|---|---|---|---|---|---|"
    )
    print(f"PublicTest: {len(labels)} faces (one face = {1 / len(labels):.3%}); each member alone:\n{head}")
    print("\n".join(row(s) for s in singles))
    limit = "any size" if max_mb == float("inf") else f"<= {max_mb:g} MB"
    print(f"\nbest of {len(groups)} subsets (2-{args.max_members} members, {limit}):\n{head}")
    print("\n".join(row(s) for s in groups[: args.top]))
    if groups:
        best, by_name = groups[0], {m.name: m for m in members}
        gain = (best.accuracy - singles[0].accuracy) * 100
        beats = gain >= args.min_gain
        print(
            f"\nbest subset: {' + '.join(best.members)} with TTA {best.tta}: {best.accuracy:.2%} against the best "
            f"single model's {singles[0].accuracy:.2%} ({gain:+.2f} points)"
        )
        if max_mb > MAX_MB:  # a teacher set: its stored probabilities, not a bundle
            stored = [RUNS / n / "train_probs.pt" for n in best.members]  # else the checkpoint
            probs = " ".join(
                str((p if p.is_file() else by_name[n].ckpt).relative_to(ROOT))
                for n, p in zip(best.members, stored)
            )
            print(f"soft targets:  python -m emo.distill {probs} --out runs/targets/NAME.pt")
        elif not beats:
            print(f"no subset beats the best single model by {args.min_gain} points: nothing to pack")
        else:
            ckpts = " ".join(str(by_name[n].ckpt.relative_to(ROOT)) for n in best.members)
            print(
                f"pack it:  python -m emo.models.pack {ckpts} ensemble {'--int8' if args.int8 else '--fp16'}"
            )
    if args.out:
        as_dict = lambda s: {**s.__dict__, "mb": round(s.mb, 2)}  # noqa: E731
        args.out.write_text(
            json.dumps(
                {
                    "split": "val",
                    "weights": "int8" if args.int8 else "fp16",
                    "singles": [as_dict(s) for s in singles],
                    "subsets": [as_dict(s) for s in groups[: args.top]],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
