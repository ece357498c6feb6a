"""The real-time display window: OpenCV's where OpenCV has a GUI, else Tk's (Python's tkinter).

The inference runtime needs only numpy, OpenCV and onnxruntime. opencv-python-headless, the build
emo depends on, has no GUI (``cv2.namedWindow`` raises ``cv2.error``), so the window then is a Tk
window from the standard library: no matplotlib, no Pillow. Each frame goes to Tk as a PPM image
(``P6`` header + RGB bytes) that replaces the pixels of one ``PhotoImage`` shown 1:1 in a label:
~3 ms per 640x480 frame under Xvfb, the colour conversion included.

Nothing is imported or opened when this module is imported: tkinter is imported, and the Tk root
created, by the :class:`Window` constructor, which raises a one-line :class:`EmoError` (with the
fix) where no window can be opened, before any work is done.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from emo.errors import EmoError

QUIT_KEYS = {ord("q"), ord("Q"), 27}  # 27: ESC
TK_QUIT_KEYS = {"q", "Q", "Escape"}  # Tk's keysyms
HEADLESS = "pass --headless with --save/--csv to write the annotated video or the predictions instead"


def ppm(frame: np.ndarray) -> bytes:
    """A BGR (or grey, or BGRA) uint8 frame as a binary PPM image: ``P6`` header + RGB bytes."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, not {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    elif frame.ndim == 3 and frame.shape[2] == 3:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"a frame must be (H, W), (H, W, 3) or (H, W, 4), not {frame.shape}")
    height, width = rgb.shape[:2]
    return b"P6\n%d %d\n255\n" % (width, height) + rgb.tobytes()


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def open_tk(title: str) -> Any:
    """A withdrawn Tk root titled ``title``.

    Raises:
        EmoError: tkinter is not installed, or there is no display (or Tk cannot start).
    """
    try:
        import tkinter
    except ImportError as err:
        raise EmoError(
            "no window can be opened: OpenCV has no GUI (opencv-python-headless) and Python's tkinter "
            "is not installed: install your OS's Tk package for Python (Debian/Ubuntu: python3-tk; "
            f"Fedora: python3-tkinter; Homebrew: python-tk), or {HEADLESS}"
        ) from err
    try:
        root = tkinter.Tk()
    except tkinter.TclError as err:
        reason = one_line(err)
        if "display" in reason.lower():
            raise EmoError(f"no window can be opened: there is no display ({reason}): {HEADLESS}") from err
        raise EmoError(
            f"no window can be opened: Tk does not start ({reason}): install your OS's Tk package "
            f"(Debian/Ubuntu: python3-tk), or {HEADLESS}"
        ) from err
    root.withdraw()  # shown on the first frame, at its size
    root.title(title)
    return root


class Window:
    """A window showing BGR frames 1:1: OpenCV's where OpenCV has a GUI, else a Tk window.

    ``kind`` is ``"cv2"`` or ``"tk"``. ``show`` returns False once the user asked to quit: q, Q,
    ESC or closing the window. The Tk window opens on the first frame, at the frame's size.

    Raises:
        EmoError: (the constructor) no window can be opened: no display, or no tkinter; one line
            that names the fix.
    """

    def __init__(self, title: str = "emo"):
        self.title, self.quit = title, False
        self.root: Any = None
        self.photo: Any = None
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
            self.kind = "cv2"
        except cv2.error:
            self.kind = "tk"
            self.root = open_tk(title)

    def _open_tk(self, data: bytes) -> None:
        import tkinter

        self.photo = tkinter.PhotoImage(master=self.root, data=data, format="PPM")
        label = tkinter.Label(self.root, image=self.photo, borderwidth=0, highlightthickness=0)
        label.pack()
        self.root.bind("<KeyPress>", self._on_key)
        self.root.protocol("WM_DELETE_WINDOW", self._on_close)
        self.root.deiconify()

    def _on_key(self, event: Any) -> None:
        if event.keysym in TK_QUIT_KEYS:
            self.quit = True

    def _on_close(self) -> None:
        self.quit = True
        self.root.withdraw()  # gone at once; destroyed by close()

    def show(self, frame: np.ndarray) -> bool:
        """Draw a BGR uint8 frame; False once the user asked to quit (q, Q, ESC, window closed)."""
        if self.kind == "cv2":
            cv2.imshow(self.title, frame)
            key = cv2.waitKey(1) & 0xFF
            closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
            return not (key in QUIT_KEYS or closed)
        if self.quit or self.root is None:
            return False
        import tkinter

        data = ppm(frame)
        try:
            if self.photo is None:
                self._open_tk(data)
            else:  # the same image, new pixels (and a new size if the frame's changed)
                self.photo.configure(data=data, format="PPM")
            self.root.update()  # draws it; keys and the close button
        except tkinter.TclError:  # the window was destroyed under us
            self.quit = True
        return not self.quit

    def close(self) -> None:
        if self.kind == "cv2":
            cv2.destroyWindow(self.title)
        elif self.root is not None:
            import tkinter

            root, self.root, self.photo = self.root, None, None
            try:
                root.destroy()
            except tkinter.TclError:
                pass
