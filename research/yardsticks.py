"""Where each model's two yardsticks come from, on PublicTest, and what the default's bar needs.

    python research/yardsticks.py                       # bundled vgg_s, vgg_s_people + every 7-class run
    python research/yardsticks.py vgg_s_people vgg_s_people_b05 --tta none
    python research/yardsticks.py --bar-accuracy 0.70 --bar-agreement 0.80
    python research/yardsticks.py --plot docs/images/yardsticks.png   # the table, and the same as a picture

FER-2013's label and the FER+ majority agree on about 63% of faces ("same"); there one answer
scores on both yardsticks. On the rest ("diff") an answer can score on one at most. The table
splits each model's answers that way (emo.report.analysis.two_yardsticks) and gives the accuracy
on same faces that the bar (default: the issue's >= 70% FER-2013 and >= 80% agreement) needs: at
best (every diff face answered as one label or the other) and at the model's own share of diff
faces answered as neither. Members load as in choose_ensemble.py (a run's committed
val_probs.pt, a bundled name, or a checkpoint). PrivateTest is never read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # choose_ensemble: the sibling script

from choose_ensemble import DATA_DIR, default_members, load_member  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="*", help="runs, bundled names or checkpoints (default: all)")
    parser.add_argument("--tta", default="flip", choices=["none", "flip"])
    parser.add_argument("--bar-accuracy", type=float, default=0.70)
    parser.add_argument("--bar-agreement", type=float, default=0.80)
    parser.add_argument(
        "--plot", type=Path, help="also draw accuracy against agreement for every model (PNG)"
    )
    args = parser.parse_args()

    from emo.data import FER2013DataModule
    from emo.data.fer2013 import FER2013_CLASSES
    from emo.report.analysis import on_same_needed, two_yardsticks, yardsticks_figure
    from emo.weights import available

    if not Path(DATA_DIR).is_dir():
        sys.exit(f"FER-2013 not found in {DATA_DIR}: set EMO_DATA_DIR (see the README's 'Getting FER-2013')")
    dm = FER2013DataModule(data_dir=DATA_DIR, classes=FER2013_CLASSES, augment=None)
    dm.setup()
    people = dm.people.get("val")
    if people is None:
        sys.exit("FER+ votes (fer2013new.csv) not found beside FER-2013: agreement with people needs them")
    labels = dm.datasets["val"].labels
    names = args.members or ["vgg_s", "vgg_s_people", *default_members()[1:]]
    rows = []
    for name in dict.fromkeys(names):
        member = load_member(name, dm)
        split = two_yardsticks(member.probs[args.tta].argmax(1).numpy(), labels, people)
        rows.append((name, split))
    first = rows[0][1]  # the counts are the split's, the same in every row
    bar = f">= {args.bar_accuracy:.0%} FER-2013 and >= {args.bar_agreement:.0%} agreement"
    print(
        f"PublicTest, TTA {args.tta}: {first['n']} faces; {first['n_counted']} count for agreement, of "
        f"which {first['n_same']} ({first['n_same'] / first['n_counted']:.1%}) have the same FER-2013 "
        f"and FER+ label and {first['n_diff']} differ. Bar: {bar}.\n"
    )
    best = on_same_needed(first, args.bar_accuracy, args.bar_agreement)
    print(
        "| model | accuracy | agreement | sum | accuracy on same faces | diff: as FER-2013 | diff: as people "
        "| diff: neither | same-face accuracy the bar needs at this neither share |\n" + "|---" * 9 + "|"
    )
    for name, s in rows:
        need = on_same_needed(s, args.bar_accuracy, args.bar_agreement, s["diff_neither"])
        print(
            f"| {name} | {s['accuracy']:.2%} | {s['agreement']:.2%} | {s['accuracy'] + s['agreement']:.3f} "
            f"| {s['on_same']:.2%} | {s['diff_fer']:.1%} | {s['diff_people']:.1%} | {s['diff_neither']:.1%} "
            f"| {'out of reach' if need > 1 else f'{need:.1%}'} |"
        )
    print(f"\nAt best (no diff face answered as neither) the bar needs {best:.1%} accuracy on same faces.")
    if args.plot:
        title = f"PublicTest ({first['n']:,} faces), TTA {args.tta}: FER-2013 accuracy against agreement with people"
        bundled = [n for n in names if n in available()]  # named even when others beat them
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        yardsticks_figure(rows, args.bar_accuracy, args.bar_agreement, title, label=bundled).savefig(
            args.plot, dpi=110
        )
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
