"""The real-time window, for real: ``python -m emo.realtime`` under a virtual X server (Xvfb).

A still video is shown in the Tk window (the standard library's tkinter: the headless OpenCV has
no GUI, and the runtime installs no matplotlib); the X screen is grabbed with imagemagick's ``import`` and must contain the
annotated frame at its own size; the q key (xdotool) then quits with complete outputs.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import emo
from emo import weights
from emo.samples import moving_face_frames, write_video

pytestmark = [pytest.mark.slow, pytest.mark.runtime]  # also in the runtime venv: no torch, no matplotlib
TITLE = f"emo - {weights.default_name()}"  # the window names the model it runs


def x11(display: str, *args: str, timeout: float = 60) -> str:
    env = {**os.environ, "DISPLAY": display}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=True).stdout


def test_the_window_shows_the_annotated_frame_and_q_quits(display, tmp_path):
    frame = moving_face_frames(1)[0]
    n_frames = 900  # 30 s at 30 FPS: far longer than the test waits
    video = write_video(tmp_path / "still.mp4", [frame] * n_frames)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    # The emo these tests import (the checkout, or the runtime venv's installed copy), run from a
    # folder that holds no other emo.
    env.update(DISPLAY=display, PYTHONPATH=str(Path(emo.__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "emo.realtime", "--source", str(video), "--smooth", "0"]
    proc = subprocess.Popen(
        [*cmd, "--csv", str(tmp_path / "p.csv")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        x11(display, "xdotool", "search", "--sync", "--name", f"^{TITLE}")
        time.sleep(2)  # a few frames drawn
        shot_path = tmp_path / "screen.png"
        x11(display, "import", "-window", "root", str(shot_path))
        # The key goes to the focused window through XTEST: sent to the window itself (XSendEvent),
        # the key release can find it already closed by the press, an X error (BadWindow).
        x11(display, "xdotool", "search", "--limit", "1", "--name", f"^{TITLE}", "windowfocus", "--sync")
        x11(display, "xdotool", "key", "q")  # to the focused window
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.decode()
    assert proc.returncode == 0, log
    if os.environ.get("EMO_TEST_ARTIFACTS"):  # CI keeps the screenshot to look at
        keep = Path(os.environ["EMO_TEST_ARTIFACTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot_path, keep / "window.png")

    # The frame is shown at its own size (Xvfb's -dpi 96 is matplotlib's pixel ratio 1): its lower
    # part, below every annotation, is found on screen pixel for pixel.
    cap = cv2.VideoCapture(str(video))
    frame = cap.read()[1]  # as decoded (MP4 is lossy)
    cap.release()
    from emo.inference import realtime
    from emo.inference.draw import colour

    (face,) = realtime.predict_faces(realtime.load_model(), frame)
    x0, y0, w0, h0 = face.box
    below = y0 + h0 + 10
    screen = cv2.imread(str(shot_path))
    scores = cv2.matchTemplate(screen, frame[below:], cv2.TM_CCOEFF_NORMED)
    _, best, _, (x, y) = cv2.minMaxLoc(scores)
    assert best > 0.98, f"the frame is not on screen (best match {best:.3f})"
    top = max(0, below - y)  # rows of the frame above the screen's edge (Xvfb has no window manager)
    assert top < 5
    shown = screen[y - below + top : y - below + frame.shape[0], x : x + frame.shape[1]]
    frame, y0 = frame[top:], y0 - top
    assert shown.shape == frame.shape

    # ... and annotated: the label's box and its probability bar in the label's colour, which
    # the bare frame does not have.
    def label_pixels(image):
        return int((np.abs(image.astype(int) - colour(face.label)).max(axis=2) < 12).sum())

    assert label_pixels(frame) < 100 and label_pixels(shown) > 1000
    box_region = shown[max(0, y0 - 40) : y0 + h0 + 5, max(0, x0 - 5) : x0 + w0 + 5]
    assert label_pixels(box_region) > 500  # the label sits on the face's box

    rows = list(csv.DictReader(open(tmp_path / "p.csv", newline="")))
    frames = int(log.split(" frames in ")[0].split()[-1])
    assert 0 < frames < n_frames  # q ended it early ...
    assert [int(r["frame"]) for r in rows] == list(range(frames))  # ... and the CSV is complete
