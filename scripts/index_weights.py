"""Record a bundled model's two yardsticks in emo/weights/index.json (what picks the default).

    python scripts/index_weights.py NAME [--tta flip] [--realtime] [--data-dir data/fer2013]
    python scripts/index_weights.py --onnx [NAME ...]     # score the shipped ONNX files too
    python scripts/index_weights.py --card [NAME ...]     # per-class F1 and multiply-adds (model card)

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
        out[key]["per_class_f1"] = {c: round(float(m["f1"]), 4) for c, m in s["per_class"].items()}
        if "agreement" in s:
            out[key].update(agreement=s["agreement"], agreement_n=s["agreement_n"])
    return out


def count_macs(model, size: int = 48) -> int:
    """Multiply-accumulates of one face through ``model``'s convolutions and linear layers (an
    ensemble: its members' sum): what ``emo.weights.fast_name`` ranks speed by, the same on any
    machine."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            total += (
                output.numel()
                * (layer.in_channels // layer.groups)
                * layer.kernel_size[0]
                * layer.kernel_size[1]
            )
        else:
            total += output.numel() * layer.in_features

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model.eval().predict_proba(torch.zeros(1, 1, size, size), "none")
    finally:
        for h in handles:
            h.remove()
    return total


def card(name: str, data_dir: str) -> dict:
    """What the model card adds to an index record: per-class F1 on both splits (the recorded TTA)
    and the multiply-accumulates of one face."""
    record = weights.recorded()[name]
    model = load_checkpoint(weights.checkpoint_path(name))
    scores = score_on(model, model.labels, record["tta"], data_dir)
    out = {"macs": count_macs(model, model.preprocess.image_size)}
    for split in ("publictest", "privatetest"):
        out[split] = {**record[split], "per_class_f1": scores[split]["per_class_f1"]}
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
        "macs": count_macs(model, model.preprocess.image_size),
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
    parser.add_argument(
        "--card",
        action="store_true",
        help="add per-class F1 and multiply-adds to NAME's record (default: all)",
    )
    parser.add_argument("--tta", default="flip")
    parser.add_argument(
        "--realtime", action="store_true", help="fast enough for the webcam (a default candidate)"
    )
    parser.add_argument(
        "--command", default="", help="the recipe (default: python -m emo.train experiment=release/NAME)"
    )
    parser.add_argument("--data-dir", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    args = parser.parse_args()
    if args.onnx or args.card:
        index = weights.recorded()
        for name in args.name or weights.available():
            index[name].update(score_onnx(name, args.data_dir) if args.onnx else card(name, args.data_dir))
            keys = ("onnx", "int8", "backend") if args.onnx else ("macs",)
            print(name, json.dumps({k: index[name].get(k) for k in keys}))
        path = weights.WEIGHTS_DIR / weights.INDEX_NAME
        path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
        return
    if len(args.name) != 1:
        parser.error("give one NAME to score its checkpoint (or --onnx)")
    args.name = args.name[0]
    command = args.command or f"python -m emo.train experiment=release/{args.name}"
    record = {**score(args.name, args.tta, args.data_dir), "realtime": args.realtime, "command": command}
    index = weights.recorded()
    index[args.name] = {**index.get(args.name, {}), **record}
    path = weights.WEIGHTS_DIR / weights.INDEX_NAME
    path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
