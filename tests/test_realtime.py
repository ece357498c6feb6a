"""Real-time pipeline: tracker, smoothing, the headless loop's outputs, errors, Ctrl-C; emo-predict."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from emo.errors import EmoError
from emo.inference import realtime
from emo.inference import video as emo_video
from emo.inference.recognizer import Face
from emo.samples import moving_face_frames, sample_path, write_video

pytestmark = pytest.mark.runtime  # also in the runtime venv (pip install .: no torch)

N_FRAMES = 24


@pytest.fixture(scope="module")
def model():
    return realtime.load_model()


@pytest.fixture(scope="module")
def frames():
    return moving_face_frames(N_FRAMES)


@pytest.fixture(scope="module")
def video(tmp_path_factory, frames):
    return write_video(tmp_path_factory.mktemp("video") / "in.mp4", frames, fps=24)


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pure_functions_on_a_frame(model, frames):
    boxes = realtime.detect_faces(model, frames[0])
    assert boxes.shape == (1, 4)
    (face,) = realtime.predict_faces(model, frames[0])
    box, label, scores, face_id = face
    assert tuple(box) == tuple(int(v) for v in boxes[0]) and label == max(scores, key=scores.get)
    assert face_id is None  # ids come from following faces over frames (Smoother)
    assert realtime.predict_faces(model, np.zeros((480, 640, 3), np.uint8)) == []


def test_tracker_follows_the_face_between_full_searches(model, frames):
    tracker = emo_video.FaceTracker(model.detector, detect_every=5)
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        (tracked,) = tracker(grey)
        (full,) = model.detector(grey)
        assert emo_video.iou(tracked, full) > 0.7
    assert tracker.full_searches == -(-N_FRAMES // 5)


def test_smoother_damps_flicker_and_keeps_faces_apart():
    names = ["happy", "sad"]
    a = Face((10, 10, 50, 50), "happy", {"happy": 0.9, "sad": 0.1})
    b = Face((12, 10, 50, 50), "sad", {"happy": 0.4, "sad": 0.6})  # same face, one odd frame
    smooth = emo_video.Smoother(0.8)
    smooth([a])
    (got,) = smooth([b])
    assert got.label == "happy" and got.scores["happy"] == pytest.approx(0.8 * 0.9 + 0.2 * 0.4)
    far = Face((300, 300, 50, 50), "sad", {"happy": 0.4, "sad": 0.6})  # another face
    assert smooth([far])[0].label == "sad"
    off = emo_video.Smoother(0.0)
    off([a])
    assert off([b])[0].scores == pytest.approx(b.scores) and list(got.scores) == names
    with pytest.raises(EmoError, match="smooth=1.0"):
        emo_video.Smoother(1.0)


def test_faces_keep_their_ids_across_frames():
    def face(x, y):
        return Face((x, y, 50, 50), "happy", {"happy": 0.9, "sad": 0.1})

    ids = emo_video.Smoother(0.0)
    assert [f.face_id for f in ids([face(10, 10), face(300, 10)])] == [0, 1]
    assert [f.face_id for f in ids([face(305, 12), face(14, 10)])] == [1, 0]  # listed the other way
    assert [f.face_id for f in ids([face(12, 10), face(150, 300)])] == [0, 2]  # 1 left, a new face
    assert [f.face_id for f in ids([face(300, 10)])] == [3]  # a face that left is not remembered


def test_csv_rows_have_the_same_columns_with_and_without_faces():
    names = ["happy", "sad"]
    columns = emo_video.csv_columns(names)
    assert columns == ["frame", "time_s", "face_id", "x", "y", "w", "h", "label", "happy", "sad"]
    (empty,) = emo_video.csv_rows(7, 0.25, [], names)
    assert empty == [7, "0.250", "", "", "", "", "", "", "", ""]
    faces = [Face((1, 2, 3, 4), "sad", {"happy": 0.25, "sad": 0.75}, 5)]
    assert emo_video.csv_rows(8, 0.5, faces, names) == [
        [8, "0.500", 5, 1, 2, 3, 4, "sad", "0.2500", "0.7500"]
    ]


def test_headless_run_writes_an_annotated_video_and_a_csv(model, video, tmp_path):
    stats = realtime.main(
        [
            "--source",
            str(video),
            "--headless",
            "--save",
            str(tmp_path / "out.mp4"),
            "--csv",
            str(tmp_path / "p.csv"),
        ]
    )
    assert stats["frames"] == N_FRAMES
    assert count_frames(tmp_path / "out.mp4") == N_FRAMES
    rows = read_csv(tmp_path / "p.csv")
    assert [int(r["frame"]) for r in rows] == list(range(N_FRAMES))  # one face per frame
    assert {r["face_id"] for r in rows} == {"0"}  # the same face throughout
    assert float(rows[-1]["time_s"]) == pytest.approx((N_FRAMES - 1) / 24, abs=1e-3)
    for r in rows:
        probs = [float(r[c]) for c in model.class_names]
        assert sum(probs) == pytest.approx(1, abs=1e-3) and r["label"] in model.class_names
        assert int(r["w"]) > 100  # the ~150 px face of the sample video


def test_the_real_time_path_keeps_tta_none_for_speed(model, video, monkeypatch, capsys):
    from emo import weights
    from emo.inference.recognizer import EmotionRecognizer

    assert weights.recorded_tta(model.source) == "flip"  # the bundled model records flip...
    assert model.tta == "none"  # ...but the real-time recognizer defaults to none
    assert realtime.parse_args([]).tta == "none"
    with pytest.raises(SystemExit):
        realtime.parse_args(["--help"])
    assert "default: none, for speed" in " ".join(capsys.readouterr().out.split())
    # run() passes none explicitly, even to a recognizer whose own default is the recorded flip.
    rec = EmotionRecognizer.from_pretrained(model.source)
    assert rec.tta == "flip"
    seen, predict = [], rec.predict
    monkeypatch.setattr(
        rec, "predict", lambda frame, tta=None, **kw: seen.append(tta) or predict(frame, tta, **kw)
    )
    assert realtime.run(video, model=rec, headless=True, max_frames=3)["frames"] == 3
    assert seen == ["none"] * 3
    assert len(realtime.predict_faces(rec, moving_face_frames(1)[0])) == 1  # the pure function, too
    assert seen[-1] == "none"
    assert realtime.run(video, model=rec, headless=True, max_frames=1, tta="flip")["frames"] == 1
    assert seen[-1] == "flip"  # asked for explicitly


def test_ctrl_c_leaves_complete_outputs(model, video, tmp_path, monkeypatch):
    calls = {"n": 0}
    predict = realtime.predict_faces

    def interrupt_at_frame_10(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return predict(*args, **kwargs)

    monkeypatch.setattr(realtime, "predict_faces", interrupt_at_frame_10)
    stats = realtime.run(
        video, model=model, headless=True, save=tmp_path / "out.mp4", csv_path=tmp_path / "p.csv"
    )
    assert stats["frames"] == 10
    assert count_frames(tmp_path / "out.mp4") == 10  # the MP4 was finalised
    assert [int(r["frame"]) for r in read_csv(tmp_path / "p.csv")] == list(range(10))


def test_a_window_without_a_display_is_a_one_line_error(video, capsys, monkeypatch):
    def no_gui(*args):
        raise cv2.error("the function is not implemented")  # opencv-python-headless

    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    monkeypatch.delenv("DISPLAY", raising=False)  # a server without a display: Tk cannot start
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit):
        realtime.main(["--source", str(video)])
    assert "pass --headless" in capsys.readouterr().err


def test_unavailable_sources_are_one_line_errors(tmp_path, capsys):
    for source, message in [
        ("99", "cannot open camera 99"),
        (str(tmp_path / "none.mp4"), "not found"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            realtime.main(["--source", source, "--headless"])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    (tmp_path / "fake.mp4").write_bytes(b"not a video")
    with pytest.raises(EmoError, match="cannot open"):
        emo_video.open_source(tmp_path / "fake.mp4")


def test_emo_predict_reports_a_corrupt_file_and_runs_the_rest(video, tmp_path, capsys):
    from emo.inference.predict import main

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
    paths = [
        str(sample_path("astronaut")),
        str(tmp_path / "broken.png"),
        str(sample_path("camera")),
        str(tmp_path / "wall.png"),
        str(video),
    ]
    assert main([*paths, "--json", "--save-dir", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [r["label"] for r in rows if r["file"].endswith("wall.png")] == ["(no face)"]
    assert len([r for r in rows if r["file"].endswith("camera.png")]) == 1  # YuNet finds the cameraman
    assert len([r for r in rows if r["file"].endswith("astronaut.png")]) == 1
    assert sorted({r["frame"] for r in rows if r["file"] == str(video)}) == list(range(N_FRAMES))
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: cannot read {tmp_path / 'broken.png'}: not an image, or a corrupt one (use PNG, JPEG, BMP or WebP)"
    ]
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert saved == [
        "astronaut_annotated.png",
        "camera_annotated.png",
        "in_annotated.mp4",
        "wall_annotated.png",
    ]
    assert count_frames(tmp_path / "out" / "in_annotated.mp4") == N_FRAMES
    annotated = cv2.imread(str(tmp_path / "out" / "astronaut_annotated.png"))
    original = cv2.imread(str(sample_path("astronaut")))
    assert annotated.shape == original.shape and (annotated != original).any()  # drawn on


def test_no_module_sets_a_matplotlib_backend():
    """``matplotlib.use("Agg")`` at import once left the webcam window no backend to open with."""
    import ast
    from pathlib import Path

    import emo

    calls = []
    for path in Path(emo.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if isinstance(node, ast.Call) and isinstance(func, ast.Attribute):
                owner = getattr(func.value, "id", "")
                if (func.attr == "use" and owner in {"matplotlib", "mpl"}) or func.attr == "switch_backend":
                    calls.append(f"{path.name}:{node.lineno}")
    assert calls == []


def test_emo_predict_report_on_a_video(model, video, tmp_path, capsys):
    from emo.inference.predict import main

    assert main([str(video), "--report", str(tmp_path / "rep"), "--csv"]) == 0
    out, err = capsys.readouterr()
    names = model.class_names
    rows = read_csv(tmp_path / "rep" / "in.csv")
    assert list(rows[0]) == ["frame", "time_s", "face_id", "x", "y", "w", "h", "label", *names]
    assert [int(r["frame"]) for r in rows] == list(range(N_FRAMES)) and {r["face_id"] for r in rows} == {"0"}
    summary = json.loads((tmp_path / "rep" / "in_summary.json").read_text())
    assert summary["frames"] == N_FRAMES and summary["seconds"] == pytest.approx(N_FRAMES / 24)
    (face,) = summary["faces"].values()
    labels = [r["label"] for r in rows]
    assert face["frames"] == N_FRAMES and face["dominant"] == max(set(labels), key=labels.count)
    assert face["share"] == {c: pytest.approx(labels.count(c) / N_FRAMES, abs=1e-4) for c in names}
    plot = cv2.imread(str(tmp_path / "rep" / "in_timeline.png"))
    assert plot is not None and plot.shape[1] > 800
    assert out.startswith("file,frame,face,") and "in.mp4: 1.0 s, 24 frames" not in out  # CSV only
    assert "in.mp4: 1.0 s, 24 frames" in err and "#0" in err  # the summary table
    assert f"wrote {tmp_path / 'rep' / 'in.csv'}" in err
