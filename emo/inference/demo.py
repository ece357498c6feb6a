"""The pretrained model on the bundled sample images and on a sample video made from them.

    python -m emo.inference.demo [--out outputs/demo]        # what `make demo` runs

Writes annotated images, the sample video and its annotated copy, and a CSV of per-frame
predictions, then prints where they are. Needs no camera, download or dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emo.errors import exit_on_emo_error, prog
from emo.inference.detect import DETECTORS
from emo.inference.predict import Predictor, print_table
from emo.inference.realtime import load_model, run
from emo.inference.recognizer import EmotionRecognizer
from emo.samples import sample_images, sample_video


@exit_on_emo_error
def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(
        prog=prog("python -m emo.inference.demo"), description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument(
        "--detector", default="yunet", choices=list(DETECTORS), help="face detector (default: yunet)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)

    model = EmotionRecognizer.from_pretrained(detector=args.detector)
    print(
        f"model: {model.source} ({model.backend.name}, {len(model.class_names)} classes: {', '.join(model.class_names)})"
    )
    predictor = Predictor(model, save_dir=out / "images", overwrite=True)  # a rerun replaces its own copies
    predictor.images(sample_images())
    print_table(predictor.rows)

    video = sample_video(out / "sample.mp4", n_frames=90)
    stats = run(
        source=video,
        model=load_model(detector=args.detector),  # the real-time detector settings
        headless=True,
        save=out / "sample_annotated.mp4",
        csv_path=out / "sample.csv",
    )
    paths = {
        "annotated images": out / "images",
        "sample video": video,
        "annotated video": out / "sample_annotated.mp4",
        "per-frame CSV": out / "sample.csv",
    }
    print(f"\nvideo: {stats['frames']} frames at {stats['fps']:.0f} FPS (detection, classification, drawing)")
    for what, path in paths.items():
        print(f"{what:>17}: {path}")
    return paths


if __name__ == "__main__":
    main()
