"""The runtime: from an image or a video frame to faces with emotions, on numpy, OpenCV and
onnxruntime alone (what ``pip install emo`` installs).

images (read, convert) -> detect (boxes in FER-2013 framing) -> crop -> preprocess and
test-time views (numpy) -> backends (onnxruntime, in chunks) -> recognizer
(``EmotionRecognizer.predict``: the one "detect, crop, classify" path) -> draw / video
(tracking, ids, CSV) / report. The doors onto it: emo-predict (predict.py), the real-time loop
(realtime.py, window.py), the demo, emo-serve (serve.py: HTTP JSON API, a WebSocket and a
webcam page). Imports point down only (pyproject.toml's import-linter contracts): nothing here
imports the training side, except the one function-local import that opens a ``.ckpt`` in
PyTorch when the ``train`` extra is installed (``backends.load_torch_backend``).
"""
