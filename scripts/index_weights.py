"""Record a bundled model's two yardsticks in emo/weights/index.json (what picks the default).

    python scripts/index_weights.py NAME [--tta flip] [--realtime] [--data-dir data/fer2013]

Scores ``emo/weights/NAME.ckpt`` (one network or an ensemble file) on PublicTest (selection:
FER-2013 accuracy and agreement with people) and on PrivateTest (the reported numbers), both with the model's TTA, and stores them
with its size; ``cross`` holds the same against the other label set (FER+ majority for a model
trained on FER-2013 labels, and the reverse). Run it once per model that enters the README; ``emo.weights.default_name()``
reads only PublicTest.
"""

from __future__ import annotations

import argparse
import json
import os

from emo import weights
from emo.data import FER2013DataModule
from emo.evaluate import LABEL_VOCABULARIES, align_probs, split_probs
from emo.models.module import load_checkpoint
from emo.report.metrics import score as summarize_probs


def score_on(model, labels: str, tta: str, data_dir: str) -> dict:
    """PublicTest and PrivateTest scores of ``model`` against ``labels`` (fer2013 or ferplus)."""
    classes = model.class_names if labels == model.labels else list(LABEL_VOCABULARIES[labels])
    pre = model.preprocess
    dm = FER2013DataModule(
        data_dir=data_dir, classes=classes, augment=None, mean=pre.mean, std=pre.std, labels=labels
    )
    dm.setup()
    out = {}
    for split, key in (("val", "publictest"), ("test", "privatetest")):
        probs = align_probs(split_probs(model, dm, split, tta), model.class_names, classes)
        s = summarize_probs(probs, dm.datasets[split].labels, classes, dm.people.get(split))
        out[key] = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "n": s["n"]}
        if "agreement" in s:
            out[key].update(agreement=s["agreement"], agreement_n=s["agreement_n"])
    return out


def score(name: str, tta: str, data_dir: str) -> dict:
    model = load_checkpoint(weights.weights_path(name))
    # The other label set too, for the README's cross-label table (FER-2013 vs FER+ majority).
    other = "ferplus" if model.labels == "fer2013" else "fer2013"
    return {
        "arch": model.hparams.arch,
        "classes": len(model.class_names),
        "labels": model.labels,
        "params": sum(p.numel() for p in model.parameters()),  # an ensemble's: its members' sum
        "megabytes": round(weights.weights_path(name).stat().st_size / 1e6, 2),
        "tta": tta,
        **score_on(model, model.labels, tta, data_dir),
        "cross": {other: score_on(model, other, tta, data_dir)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--tta", default="flip")
    parser.add_argument(
        "--realtime", action="store_true", help="fast enough for the webcam (a default candidate)"
    )
    parser.add_argument("--command", default="", help="the training command behind the weights")
    parser.add_argument("--data-dir", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    args = parser.parse_args()
    record = {**score(args.name, args.tta, args.data_dir), "realtime": args.realtime, "command": args.command}
    index = weights.index()
    index[args.name] = record
    path = weights.WEIGHTS_DIR / weights.INDEX_NAME
    path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
