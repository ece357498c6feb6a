"""The real-time window without OpenCV's GUI (opencv-python-headless): Tk, from the standard library.

Fast tests need no display: the PPM encoding of a BGR frame, the one-line errors (no display, no
tkinter), and the window's logic against a stand-in tkinter. The slow one opens the window for real
under a virtual X server (Xvfb): the frame is on screen pixel for pixel, and q (xdotool) quits.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from emo.errors import EmoError
from emo.inference import window as emo_window
from emo.inference.window import Window, ppm

pytestmark = pytest.mark.runtime  # also in the runtime venv (pip install .: no torch)

RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # BGR


def have_tkinter() -> bool:
    return importlib.util.find_spec("tkinter") is not None


def test_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A BGR frame: ramps, a red, a green and a blue square, and one-pixel stripes (1:1 or not)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    frame[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    frame[100:200, 100:200] = RED
    frame[100:200, 300:400] = GREEN
    frame[300:400, 100:200] = BLUE
    frame[::2, 500:600] = 255
    return frame


test_frame.__test__ = False  # a helper, not a test


@pytest.fixture
def no_cv2_gui(monkeypatch):
    """OpenCV as opencv-python-headless is, whichever build is installed."""

    def no_gui(*args):
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(cv2, "namedWindow", no_gui)


# ------------------------------------------------------------------------- no display needed
def test_ppm_of_a_bgr_frame_is_its_rgb_bytes():
    frame = np.zeros((2, 3, 3), np.uint8)
    frame[0, 0], frame[0, 1], frame[1, 2] = RED, GREEN, BLUE
    header = b"P6\n3 2\n255\n"
    data = ppm(frame)
    assert data.startswith(header)
    rgb = np.frombuffer(data[len(header) :], np.uint8).reshape(2, 3, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0]  # red
    assert rgb[0, 1].tolist() == [0, 255, 0]
    assert rgb[1, 2].tolist() == [0, 0, 255]  # blue
    assert rgb[1, 0].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(rgb, frame[..., ::-1])


def test_ppm_of_grey_and_bgra_frames_and_bad_ones():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert ppm(grey) == b"P6\n3 2\n255\n" + np.repeat(grey, 3).tobytes()
    bgra = np.dstack([test_frame(8, 4), np.zeros((4, 8), np.uint8)])
    assert ppm(bgra) == ppm(test_frame(8, 4))  # alpha dropped
    assert ppm(test_frame()[:, ::2]) == ppm(np.ascontiguousarray(test_frame()[:, ::2]))  # any strides
    with pytest.raises(ValueError, match="uint8"):
        ppm(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="frame must be"):
        ppm(np.zeros((2, 2, 2), np.uint8))


def test_importing_the_window_opens_nothing_and_needs_no_matplotlib():
    code = (
        "import sys, emo.inference.window; "
        "loaded = [m for m in ('tkinter', 'matplotlib', 'torch') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    root = Path(emo_window.__file__).resolve().parents[2]  # the emo under test: checkout or installed
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@pytest.mark.skipif(sys.platform != "linux", reason="Tk needs an X display on Linux only")
def test_without_a_display_the_constructor_raises_one_line(no_cv2_gui, monkeypatch):
    if not have_tkinter():
        pytest.skip("needs tkinter")
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(EmoError) as info:
        Window("emo test")
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "no display" in message and "--headless" in message and "--save/--csv" in message


def test_without_tkinter_the_constructor_names_the_fix(no_cv2_gui, monkeypatch):
    monkeypatch.setitem(sys.modules, "tkinter", None)  # import tkinter: ImportError
    with pytest.raises(EmoError) as info:
        Window("emo test")
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "python3-tk" in message and "--headless" in message


class FakeTk:
    """The parts of tkinter the window uses, recording what it is asked to do."""

    class TclError(Exception):
        pass

    def __init__(self):
        self.roots, self.photos = [], []
        tk = self

        class Tk:
            def __init__(self):
                self.shown, self.destroyed, self.updates = False, False, 0
                self.bindings, self.protocols, self.titles = {}, {}, []
                tk.roots.append(self)

            def withdraw(self):
                self.shown = False

            def deiconify(self):
                self.shown = True

            def title(self, text):
                self.titles.append(text)

            def bind(self, sequence, fn):
                self.bindings[sequence] = fn

            def protocol(self, name, fn):
                self.protocols[name] = fn

            def update(self):
                self.updates += 1

            def destroy(self):
                self.destroyed = True

        class PhotoImage:
            def __init__(self, master=None, data=None, format=None):
                self.master, self.data, self.format, self.configured = master, data, format, 0
                tk.photos.append(self)

            def configure(self, data=None, format=None):
                self.data, self.format, self.configured = data, format, self.configured + 1

        class Label:
            def __init__(self, master, image=None, **options):
                self.image, self.options = image, options

            def pack(self):
                pass

        self.Tk, self.PhotoImage, self.Label = Tk, PhotoImage, Label

    def module(self) -> types.ModuleType:
        module = types.ModuleType("tkinter")
        module.Tk, module.PhotoImage, module.Label = self.Tk, self.PhotoImage, self.Label
        module.TclError = self.TclError
        return module


@pytest.fixture
def fake_tk(no_cv2_gui, monkeypatch) -> FakeTk:
    tk = FakeTk()
    monkeypatch.setitem(sys.modules, "tkinter", tk.module())
    return tk


def test_the_tk_window_opens_on_the_first_frame_and_reuses_one_image(fake_tk):
    window = Window("emo - vgg_s")
    assert window.kind == "tk"
    (root,) = fake_tk.roots
    assert root.titles == ["emo - vgg_s"] and not root.shown and not fake_tk.photos  # nothing yet
    frames = [test_frame(), test_frame()[::-1].copy(), test_frame(320, 240)]
    for frame in frames:
        assert window.show(frame)
        assert fake_tk.photos[-1].data == ppm(frame) and fake_tk.photos[-1].format == "PPM"
    assert root.shown and len(fake_tk.photos) == 1 and fake_tk.photos[0].configured == 2
    assert root.updates == 3  # events processed every frame
    window.close()
    assert root.destroyed
    window.close()  # twice is fine


@pytest.mark.parametrize("key", ["q", "Q", "Escape"])
def test_quit_keys_end_the_tk_window(fake_tk, key):
    window = Window()
    assert window.show(test_frame())
    (root,) = fake_tk.roots
    root.bindings["<KeyPress>"](types.SimpleNamespace(keysym="space"))
    assert window.show(test_frame())
    root.bindings["<KeyPress>"](types.SimpleNamespace(keysym=key))
    assert not window.show(test_frame())
    assert not window.show(test_frame())  # and stays ended
    window.close()


def test_closing_the_tk_window_ends_it(fake_tk):
    window = Window()
    assert window.show(test_frame())
    (root,) = fake_tk.roots
    root.protocols["WM_DELETE_WINDOW"]()
    assert not root.shown  # gone at once
    assert not window.show(test_frame())
    window.close()
    assert root.destroyed


def test_a_tk_window_destroyed_under_it_ends_it(fake_tk):
    window = Window()
    assert window.show(test_frame())

    def gone():
        raise fake_tk.TclError('invalid command name "image1"')

    fake_tk.roots[0].update = gone
    assert not window.show(test_frame())
    window.close()


# --------------------------------------------------------------------------- a real window


def x11(display: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISPLAY": display}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=check)


@pytest.mark.slow
def test_the_tk_window_shows_frames_1_to_1_and_q_quits(display, no_cv2_gui, monkeypatch, tmp_path):
    monkeypatch.setenv("DISPLAY", display)
    title = f"emo-tk-test-{os.getpid()}"
    window = Window(title)
    try:
        assert window.kind == "tk"
        assert x11(display, "xdotool", "search", "--onlyvisible", "--name", title, check=False).returncode
        frame = test_frame()
        for i in range(5):
            shown = frame.copy()
            shown[450:470, 20 * i : 20 * i + 10] = 255  # a moving mark
            assert window.show(shown)
        assert window.show(frame)
        x11(display, "xdotool", "search", "--sync", "--onlyvisible", "--name", title)
        shot = tmp_path / "window_tk.png"
        x11(display, "import", "-window", "root", str(shot))
        if os.environ.get("EMO_TEST_ARTIFACTS"):  # CI keeps the screenshot to look at
            keep = Path(os.environ["EMO_TEST_ARTIFACTS"])
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, keep / "window_tk.png")

        # The frame is on screen pixel for pixel (1:1, colours in order: its red square is red).
        screen = cv2.imread(str(shot))
        diff = cv2.matchTemplate(screen, frame, cv2.TM_SQDIFF)
        _, _, (x, y), _ = cv2.minMaxLoc(diff)
        height, width = frame.shape[:2]
        assert np.array_equal(screen[y : y + height, x : x + width], frame), "the frame is not on screen 1:1"
        assert screen[y + 150, x + 150].tolist() == list(RED)
        assert screen[y + 350, x + 150].tolist() == list(BLUE)

        # q, typed in the focused window (XTEST: a key sent to the window itself, XSendEvent, could
        # find it already closed by the press), ends it.
        x11(display, "xdotool", "search", "--sync", "--limit", "1", "--name", title, "windowfocus", "--sync")
        x11(display, "xdotool", "key", "q")
        deadline = time.monotonic() + 20
        while window.show(frame):
            assert time.monotonic() < deadline, "q did not end the window"
            time.sleep(0.01)
    finally:
        window.close()
    assert x11(display, "xdotool", "search", "--onlyvisible", "--name", title, check=False).returncode


@pytest.mark.slow
def test_closing_the_real_tk_window_ends_it(display, no_cv2_gui, monkeypatch):
    monkeypatch.setenv("DISPLAY", display)
    window = Window("emo-tk-close-test")
    try:
        assert window.show(test_frame(64, 48))
        root = window.root
        root.tk.call(root.protocol("WM_DELETE_WINDOW"))  # what the window manager's close button does
        assert not window.show(test_frame(64, 48))
        assert root.state() == "withdrawn"
    finally:
        window.close()
    assert window.root is None
    assert emo_window.Window is Window
