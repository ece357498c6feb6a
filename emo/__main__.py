"""One command for everything emo does: ``emo <subcommand> [arguments]``.

    emo predict photo.jpg                  # faces and emotions in photos, folders and videos
    emo realtime                           # the webcam (or --source clip.mp4), annotated live
    emo train model=cnn3 data.augment=strong   # Hydra overrides, as python -m emo.train takes them

``emo --help`` lists the subcommands, ``emo SUBCOMMAND --help`` their arguments. Each is the
same program as its own console script (``emo-predict``, ``emo-train``, ...) and ``python -m``
module, which keep working. A subcommand's module is imported only when it runs, so the runtime's
subcommands start without the training stack, and the training ones say in one line which extra
they need where it is missing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import emo
from emo.errors import EmoError, exit_on_emo_error

#: name -> (module, function, what it does, the extra it needs beyond the runtime or "").
#: The function takes the arguments (argparse doors) or reads them from sys.argv (Hydra doors).
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "predict": ("emo.inference.predict", "main", "emotions in photos, folders and videos (--report)", ""),
    "realtime": ("emo.inference.realtime", "main", "a webcam or a video, annotated live (or --headless)", ""),
    "analyze": (
        "emo.inference.analyze",
        "main",
        "emotions across an archive of videos and photos, into Parquet (resumable; --engine ray)",
        "analyze",
    ),
    "demo": ("emo.inference.demo", "main", "the default model on the bundled sample photos and video", ""),
    "serve": (
        "emo.inference.serve",
        "cli",
        "the on-device page, the HTTP API and the live webcam page",
        "serve",
    ),
    "export-web": (
        "emo.inference.webapp",
        "main",
        "the on-device page (models run in the browser) as a static folder for any host",
        "",
    ),
    "train": ("emo.train", "cli", "train a model (Hydra overrides: model=cnn3 data.augment=strong)", "train"),
    "evaluate": ("emo.evaluate", "cli", "score a checkpoint on PublicTest or PrivateTest", "train"),
    "export": ("emo.export", "main", "checkpoints to ONNX, the runtime's format (--int8, ensembles)", "onnx"),
    "summarize": ("emo.report.summarize", "main", "mean +- std over a multirun's seeds", "train"),
}
HYDRA = {"train", "evaluate"}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: emo SUBCOMMAND [arguments]   (emo SUBCOMMAND --help for its arguments)",
        "",
        "facial-expression recognition: the bundled models on photos, video and the webcam, and the",
        "research side that trains them",
        "",
        "subcommands:",
    ]
    for name, (_, _, what, extra) in SUBCOMMANDS.items():
        needs = f"  [pip install 'emo[{extra}]']" if extra else ""
        lines.append(f"  {name:<{width}}  {what}{needs}")
    lines += ["", "options:", "  -h, --help     this list", "  --version      emo's version"]
    return "\n".join(lines)


@exit_on_emo_error
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``emo SUBCOMMAND ...``; the exit status (0, or the subcommand's own)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"emo {emo.__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        raise EmoError(f"emo has no subcommand {name!r}: choose one of {', '.join(SUBCOMMANDS)} (emo --help)")
    module_name, function, _, extra = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if not extra or (err.name or "").startswith("emo"):
            raise
        raise EmoError(
            f"emo {name} needs {err.name}, which is not installed: pip install 'emo[{extra}]'"
        ) from None
    if name in HYDRA:  # Hydra reads the command line itself
        sys.argv = [f"emo {name}", *rest]
        result = getattr(module, function)()
    else:
        sys.argv = [f"emo {name}", *rest]  # what --help and errors call the program
        result = getattr(module, function)(rest)
    return result if isinstance(result, int) else 0  # some doors return what they wrote


if __name__ == "__main__":
    sys.exit(main())
