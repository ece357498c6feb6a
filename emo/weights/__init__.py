"""Bundled models: ONNX files that ship inside the package, and their recorded yardsticks.

    emo/weights/NAME.onnx         every bundled model (fp32 compute; weights stored as the
                                  checkpoint held them: fp32, fp16 or int8 with per-channel scales)
    emo/weights/NAME-int8.onnx    static int8, where it keeps fp32's PublicTest accuracy
    emo/weights/index.json        both yardsticks of each, its TTA, size and recorded backend

Each ONNX file carries its class names, preprocessing, labels and TTA, so the runtime needs
nothing else; ``emo-export --bundle NAME`` writes them from a checkpoint and
``scripts/index_weights.py`` records their numbers. The source checkout also keeps each model's
packed checkpoint (``NAME.ckpt``: ``init_from``, distillation, parity checks) for the training
side; the wheel does not carry those, and the runtime never opens them.
"""

from __future__ import annotations

import json
from pathlib import Path

from emo.errors import EmoError
from emo.paths import WEIGHTS_DIR

INDEX_NAME = "index.json"
INT8_SUFFIX = "-int8"
#: The default model keeps at least this FER-2013 PublicTest accuracy.
DEFAULT_MIN_ACCURACY = 0.70
#: An int8 file is the recorded backend only where its PublicTest accuracy is at most this far
#: (in points) below fp32's, both with the model's recorded TTA.
INT8_MAX_DROP = 0.3
#: Names that stand for a bundled model chosen by its recorded metrics, by purpose.
ALIASES = ("default", "fast", "leaderboard", "ferplus")


def available() -> list[str]:
    """Names of the bundled models (``emo/weights/NAME.onnx``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.onnx") if not p.stem.endswith(INT8_SUFFIX))


def recorded() -> dict[str, dict]:
    """Every record of ``index.json``, also of models whose file is not (yet) here."""
    path = WEIGHTS_DIR / INDEX_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def index() -> dict[str, dict]:
    """Each bundled model's recorded yardsticks (``scripts/index_weights.py``): PublicTest and
    PrivateTest accuracy and agreement with people, TTA, size, whether it runs in real time,
    its int8 file's PublicTest accuracy and the backend that follows from it."""
    names = set(available())
    return {n: r for n, r in recorded().items() if n in names}


def info(name: str) -> dict:
    """The index record of bundled model ``name`` (or an alias); ``{}`` for one the index lacks."""
    return dict(index().get(resolve_name(name), {}))


def recorded_tta(name: str) -> str:
    """The test-time augmentation recorded for bundled model ``name`` (chosen on PublicTest; its
    ONNX file carries the same): ``none`` where the index records none."""
    return info(name).get("tta") or "none"


def recorded_backend(name: str) -> str:
    """``onnx-int8`` where bundled model ``name``'s int8 file keeps its fp32 PublicTest accuracy
    within ``INT8_MAX_DROP`` points (as the index records), else ``onnx``."""
    return info(name).get("backend") or "onnx"


def is_ensemble(name: str) -> bool:
    """Whether bundled model ``name`` is an ensemble (several networks, averaged, in one graph)."""
    return str(info(name).get("arch", "")).startswith("ensemble(")


def _seven_class(records: dict[str, dict]) -> dict[str, dict]:
    return {
        n: r for n, r in records.items() if r.get("classes") == 7 and r.get("labels", "fer2013") == "fer2013"
    }


def _check_bundled() -> list[str]:
    names = available()
    if not names:
        raise EmoError("no bundled models in this installation: reinstall emo, or give a model file")
    return names


def default_name() -> str:
    """The model people get: among the seven-class models that run in real time and keep
    ``DEFAULT_MIN_ACCURACY`` on FER-2013 PublicTest, the one that agrees with people best on
    PublicTest (FER+ majority). Chosen from the index, so it follows newly bundled models.
    An ensemble is never the default unless its index record says ``realtime``."""
    names = _check_bundled()
    records = _seven_class(index())
    candidates = {
        n: r
        for n, r in records.items()
        if r.get("realtime") and r["publictest"]["accuracy"] >= DEFAULT_MIN_ACCURACY
    }
    if candidates:
        return max(candidates, key=lambda n: candidates[n]["publictest"].get("agreement", 0.0))
    fast = [n for n in records if records[n].get("realtime")]
    return _most_accurate(fast) if fast else names[0]


def fast_name() -> str:
    """The cheapest seven-class model that runs in real time: the fewest multiply-adds a face
    (``macs`` in the index, the same on every machine), for many faces or a slow device. It gives
    up accuracy for speed; the default is the one to start from."""
    _check_bundled()
    records = _seven_class(index())
    fast = {n: r for n, r in records.items() if r.get("realtime")}
    if not fast:
        return default_name()
    return min(fast, key=lambda n: (fast[n].get("macs", float("inf")), fast[n].get("params", 0), n))


def leaderboard_name() -> str:
    """The seven-class model with the best FER-2013 PublicTest accuracy (the field's leaderboard
    yardstick; PrivateTest is only reported), an ensemble included."""
    names = _check_bundled()
    records = _seven_class(index())
    return _most_accurate(list(records)) if records else names[0]


def ferplus_name() -> str:
    """The model trained on FER+'s labels (eight classes, contempt included: what people voted),
    the best on FER+ PublicTest accuracy.

    Raises:
        EmoError: no bundled model learnt FER+'s labels.
    """
    records = {n: r for n, r in index().items() if r.get("labels") == "ferplus"}
    if not records:
        raise EmoError("no bundled model was trained on FER+'s labels: use default or leaderboard")
    return _most_accurate(list(records))


def _most_accurate(names: list[str]) -> str:
    records = index()
    return max(names, key=lambda n: records[n]["publictest"]["accuracy"])


def resolve_name(name: str) -> str:
    """A bundled name, with the aliases (``default``, ``fast``, ``leaderboard``, ``ferplus``) resolved."""
    aliases = {
        "default": default_name,
        "fast": fast_name,
        "leaderboard": leaderboard_name,
        "ferplus": ferplus_name,
    }
    return aliases.get(name, lambda: name)()


def model_path(name: str, backend: str = "onnx") -> Path:
    """The ONNX file of bundled model ``name`` (or an alias: ``default``, ``leaderboard``, ``ferplus``):
    ``NAME.onnx``, or for ``backend="onnx-int8"`` ``NAME-int8.onnx``.

    Raises:
        EmoError: no bundled model of that name, or no int8 file for it.
    """
    name = resolve_name(name)
    path = WEIGHTS_DIR / f"{name}.onnx"
    if not path.is_file():
        raise EmoError(
            f"no bundled model named {name!r}: choose one of {', '.join([*available(), *ALIASES])}"
        )
    if backend == "onnx-int8":
        int8 = path.with_name(f"{name}{INT8_SUFFIX}.onnx")
        if not int8.is_file():
            with_int8 = [n for n in available() if (WEIGHTS_DIR / f"{n}{INT8_SUFFIX}.onnx").is_file()]
            raise EmoError(
                f"bundled model {name!r} has no int8 file: use backend onnx, or one of {', '.join(with_int8)}"
            )
        return int8
    return path


def checkpoint_path(name: str) -> Path:
    """The packed PyTorch checkpoint of bundled model ``name``, which a source checkout keeps
    beside its ONNX file for the training side (``init_from``, distillation, parity checks).

    Raises:
        EmoError: this installation has no such checkpoint (the wheel carries ONNX files only).
    """
    name = resolve_name(name)
    path = WEIGHTS_DIR / f"{name}.ckpt"
    if not path.is_file():
        raise EmoError(
            f"no checkpoint of bundled model {name!r} here (emo/weights/{name}.ckpt ships with the "
            "source checkout only): clone the repository, or use the ONNX model"
        )
    return path
