"""The serving wing: from an image or a video frame to faces with emotions.

images (read, convert) -> detect (boxes in FER-2013 framing) -> crop -> backends (torch or
onnxruntime, in chunks) -> recognizer (``EmotionRecognizer.predict``: the one "detect, crop,
classify" path) -> draw / video (tracking, ids, CSV) / report. The doors onto it: emo-predict
(predict.py), the real-time loop (realtime.py), the demo, emo-export (export.py), emo-serve
(serve.py: HTTP JSON API, a WebSocket and a webcam page).
Imports point down only (pyproject.toml's import-linter contracts): nothing here imports the
training wing beyond ``emo.models.module``'s checkpoint loading and ``emo.data``'s eval transform.
"""
