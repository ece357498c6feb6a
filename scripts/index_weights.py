"""Record a bundled model's two yardsticks in emo/weights/index.json (what picks the default).

    python scripts/index_weights.py NAME [--tta flip] [--realtime] [--data-dir data/fer2013]
    python scripts/index_weights.py --onnx [NAME ...]     # score the shipped ONNX files too

``--onnx`` scores ``emo/weights/NAME.onnx`` and, where there is one, ``NAME-int8.onnx`` in the
runtime (onnxruntime, numpy TTA) on PublicTest with the recorded TTA, and records the backend
``from_pretrained`` runs: int8 where it keeps fp32's accuracy within ``INT8_MAX_DROP`` points.

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

import torch

from emo import weights
from emo.data import FER2013DataModule
from emo.evaluate import LABEL_VOCABULARIES, align_probs, split_probs
from emo.inference.recognizer import EmotionRecognizer
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
    model = load_checkpoint(weights.checkpoint_path(name))
    # The other label set too, for the README's cross-label table (FER-2013 vs FER+ majority).
    other = "ferplus" if model.labels == "fer2013" else "fer2013"
    return {
        "arch": model.hparams.arch,
        "classes": len(model.class_names),
        "labels": model.labels,
        "params": sum(p.numel() for p in model.parameters()),  # an ensemble's: its members' sum
        "megabytes": round(weights.model_path(name).stat().st_size / 1e6, 2),
        "tta": tta,
        **score_on(model, model.labels, tta, data_dir),
        "cross": {other: score_on(model, other, tta, data_dir)},
    }


class RuntimeModel:
    """An ONNX file in the runtime, answering what ``split_probs`` asks of a model."""

    def __init__(self, path):
        self.recognizer = EmotionRecognizer.from_checkpoint(path, tta="none")
        self.class_names = self.recognizer.class_names

    def parameters(self):
        yield torch.zeros(1)  # split_probs reads the device from here: the CPU

    def predict_proba(self, x: torch.Tensor, tta: str) -> torch.Tensor:
        return torch.from_numpy(self.recognizer.input_probs(x.numpy(), tta))


def score_onnx(name: str, data_dir: str) -> dict:
    """PublicTest accuracy of the fp32 and int8 ONNX files of ``name`` with its recorded TTA, and
    the backend that follows (``emo.weights.recorded_backend``)."""
    record = weights.recorded()[name]
    model = load_checkpoint(weights.checkpoint_path(name))
    pre, labels, tta = model.preprocess, record.get("labels", "fer2013"), record["tta"]
    dm = FER2013DataModule(
        data_dir=data_dir, classes=model.class_names, augment=None, mean=pre.mean, std=pre.std, labels=labels
    )
    dm.setup()
    truth = dm.datasets["val"].labels
    out = {"megabytes": round(weights.model_path(name).stat().st_size / 1e6, 2), "backend": "onnx"}
    for key, suffix in (("onnx", ""), ("int8", weights.INT8_SUFFIX)):
        path = weights.WEIGHTS_DIR / f"{name}{suffix}.onnx"
        if not path.is_file():
            continue
        probs = split_probs(RuntimeModel(path), dm, "val", tta)
        out[key] = {
            "publictest": float((probs.argmax(-1) == truth).float().mean()),
            "megabytes": round(path.stat().st_size / 1e6, 2),
        }
    if (
        "int8" in out
        and (out["onnx"]["publictest"] - out["int8"]["publictest"]) * 100 <= weights.INT8_MAX_DROP
    ):
        out["backend"] = "onnx-int8"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="*")
    parser.add_argument("--onnx", action="store_true", help="score the ONNX files of NAME (default: all)")
    parser.add_argument("--tta", default="flip")
    parser.add_argument(
        "--realtime", action="store_true", help="fast enough for the webcam (a default candidate)"
    )
    parser.add_argument("--command", default="", help="the training command behind the weights")
    parser.add_argument("--data-dir", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    args = parser.parse_args()
    if args.onnx:
        index = weights.recorded()
        for name in args.name or weights.available():
            index[name].update(score_onnx(name, args.data_dir))
            print(name, json.dumps({k: index[name].get(k) for k in ("onnx", "int8", "backend")}))
        path = weights.WEIGHTS_DIR / weights.INDEX_NAME
        path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
        return
    if len(args.name) != 1:
        parser.error("give one NAME to score its checkpoint (or --onnx)")
    args.name = args.name[0]
    record = {**score(args.name, args.tta, args.data_dir), "realtime": args.realtime, "command": args.command}
    index = weights.recorded()
    index[args.name] = {**index.get(args.name, {}), **record}
    path = weights.WEIGHTS_DIR / weights.INDEX_NAME
    path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
