"""The video report's timeline plot, drawn with OpenCV alone: panels, colours, gaps, speed, errors."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import emo.inference.report as report
from emo.errors import EmoError
from emo.inference.draw import colour
from emo.inference.recognizer import Face
from emo.inference.report import (
    MAX_TIMELINE_FACES,
    WIDTH,
    VideoReport,
    axes_box,
    nice_ticks,
    timeline_image,
    write_png,
)

pytestmark = pytest.mark.runtime  # also in the runtime venv (pip install .: no torch)

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FPS = 30.0


def face(face_id: int, **probs: float) -> Face:
    """A face whose named classes have the given probabilities, the rest sharing what is left."""
    rest = [c for c in CLASSES if c not in probs]
    left = max(0.0, 1.0 - sum(probs.values()))
    scores = {c: probs.get(c, left / len(rest) if rest else 0.0) for c in CLASSES}
    return Face((10, 10, 50, 50), max(scores, key=scores.get), scores, face_id)


def near(image: np.ndarray, bgr, tol: int = 25) -> np.ndarray:
    """Where ``image``'s pixels are ``bgr``, each channel within ``tol``."""
    return (np.abs(image.astype(np.int16) - np.array(bgr, np.int16)) <= tol).all(axis=-1)


def bands(image: np.ndarray, panel: int):
    """The top and bottom tenth (probability near 1 and near 0) of a panel's axes."""
    x0, y0, x1, y1 = axes_box(panel, image.shape[1])
    tenth = (y1 - y0) // 10
    return image[y0 + 1 : y0 + tenth, x0 + 1 : x1], image[y1 - tenth : y1, x0 + 1 : x1]


def happy_then_sad(n: int = 300) -> VideoReport:
    """One face, happy (p = 1) for the first half of the video and sad for the second."""
    rep = VideoReport("clip.mp4", CLASSES, FPS)
    for i in range(n):
        rep.add(i, [face(0, happy=1.0) if i < n // 2 else face(0, sad=1.0)])
    return rep


def test_write_saves_the_timeline_png_with_each_class_colour_where_its_probability_is(tmp_path):
    paths = happy_then_sad().write(tmp_path / "rep")
    assert paths["timeline"] == tmp_path / "rep" / "clip_timeline.png"
    assert all(p.is_file() for p in paths.values())
    plot = cv2.imread(str(paths["timeline"]))
    assert plot is not None and plot.shape[1] == WIDTH
    top, bottom = bands(plot, 0)
    half = top.shape[1] // 2
    happy, sad = colour("happy"), colour("sad")
    # happy is 1 in the first half of the time axis, 0 in the second; sad the other way round
    assert near(top[:, : half - 10], happy).sum() > 200 and not near(top[:, half + 10 :], happy).any()
    assert near(top[:, half + 10 :], sad).sum() > 200 and not near(top[:, : half - 10], sad).any()
    # the classes at 0 overlap at the bottom; neutral, drawn last, lies on top all along
    assert near(bottom[:, : half - 10], colour("neutral")).sum() > 200
    assert near(bottom[:, half + 10 :], colour("neutral")).sum() > 200
    assert (plot[0, 0] == 255).all() and (plot[-1, -1] == 255).all()  # a white background


def test_timeline_has_a_panel_per_face_longest_first_and_at_most_max_faces():
    rep = VideoReport("two.mp4", CLASSES, FPS)
    for i in range(300):
        faces = [face(1, happy=1.0)] + ([face(0, happy=1.0)] if i < 100 else [])
        rep.add(i, faces)
    plot = rep.timeline(rep.summary())
    assert plot.dtype == np.uint8 and plot.ndim == 3 and plot.shape[1] == WIDTH
    assert plot.shape[0] > axes_box(1)[3] and plot.shape[0] < axes_box(2)[3]  # two panels
    happy = colour("happy")
    first, _ = bands(plot, 0)  # face 1, seen all along
    second, _ = bands(plot, 1)  # face 0, seen for the first third only
    third = first.shape[1] // 3
    assert near(first[:, -third:], happy).any()
    assert near(second[:, : third - 10], happy).any() and not near(second[:, third + 10 :], happy).any()

    crowd = VideoReport("crowd.mp4", CLASSES, FPS)
    for i in range(20):
        crowd.add(i, [face(k, neutral=1.0) for k in range(MAX_TIMELINE_FACES + 3) if i >= k])
    plot = crowd.timeline(crowd.summary())
    n = MAX_TIMELINE_FACES
    assert axes_box(n - 1)[3] < plot.shape[0] < axes_box(n)[3]


def test_timeline_without_faces_says_no_face_found(tmp_path):
    rep = VideoReport("empty.mp4", CLASSES, FPS)
    for i in range(50):
        rep.add(i, [])
    paths = rep.write(tmp_path)
    plot = cv2.imread(str(paths["timeline"]))
    assert plot is not None and plot.shape[1] == WIDTH and plot.shape[0] < axes_box(1)[3]
    assert not any(near(plot, colour(c), tol=8).any() for c in CLASSES if c != "neutral")
    x0, y0, x1, y1 = axes_box(0)
    middle = plot[(y0 + y1) // 2 - 12 : (y0 + y1) // 2 + 12, (x0 + x1) // 2 - 80 : (x0 + x1) // 2 + 80]
    assert (middle.max(axis=-1) < 160).sum() > 100  # the text's dark strokes


def test_timeline_of_a_single_frame_draws_a_dot(tmp_path):
    rep = VideoReport("one.png.mp4", CLASSES, FPS)
    rep.add(0, [face(0, happy=1.0)])
    plot = cv2.imread(str(rep.write(tmp_path)["timeline"]))
    assert plot is not None and plot.shape[1] == WIDTH
    top, _ = bands(plot, 0)
    ys, xs = np.nonzero(near(top, colour("happy")))
    assert len(xs) >= 4 and xs.max() < 20  # a dot at the start of the time axis, nothing else


def test_timeline_leaves_a_gap_where_the_face_was_missing():
    rep = VideoReport("gap.mp4", CLASSES, FPS)
    for i in range(300):
        rep.add(i, [face(0, happy=1.0)] if i < 100 or i >= 200 else [])
    plot = rep.timeline(rep.summary())
    top, _ = bands(plot, 0)
    third = top.shape[1] // 3
    happy = near(top, colour("happy"))
    assert happy[:, : third - 10].any() and happy[:, -third + 10 :].any()
    assert not happy[:, third + 10 : -third - 10].any()  # no line across the gap


def test_timeline_image_draws_20000_points_fast():
    n = 20_000
    t = np.arange(n) / FPS
    rng = np.random.default_rng(0)
    logits = np.cumsum(rng.normal(0, 0.2, (n, len(CLASSES))), axis=0)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    tracks = {0: (t, probs), 1: (t[: n // 2], probs[: n // 2])}
    timeline_image(tracks, CLASSES, "long.mp4", FPS)  # warm up
    best = min(_timed(lambda: timeline_image(tracks, CLASSES, "long.mp4", FPS)) for _ in range(3))
    assert best < 0.2


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_unwritable_timeline_raises_emo_error(tmp_path):
    image = np.full((10, 10, 3), 255, np.uint8)
    missing = tmp_path / "no" / "such" / "dir" / "plot.png"
    with pytest.raises(EmoError, match="plot.png") as err:
        write_png(missing, image)
    assert "\n" not in str(err.value)

    (tmp_path / "rep" / "clip_timeline.png").mkdir(parents=True)  # a folder where the PNG goes
    with pytest.raises(EmoError, match="clip_timeline.png"):
        happy_then_sad(10).write(tmp_path / "rep")

    (tmp_path / "a_file").write_text("")
    with pytest.raises(EmoError, match="a_file"):
        happy_then_sad(10).write(tmp_path / "a_file")


@pytest.mark.parametrize(
    "lo, hi, expected",
    [
        (0, 10, np.arange(0, 11, 1.0)),
        (0, 9.9, np.arange(0, 10, 1.0)),
        (0, 0.8, np.arange(0, 9) / 10),
        (0, 666.6, np.arange(0, 7) * 100.0),
        (0, 33.3, np.arange(0, 7) * 5.0),
        (2.5, 4.5, np.arange(26, 46, 2) / 10),
    ],
)
def test_nice_ticks_are_round_steps_over_the_range(lo, hi, expected):
    np.testing.assert_allclose(nice_ticks(lo, hi), expected)


def test_report_module_does_not_import_matplotlib():
    tree = ast.parse(Path(report.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "matplotlib"]
