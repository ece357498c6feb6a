"""emo analyze: an archive of videos and photos into Parquet tables, resumable, on a local process
pool or Ray, with every unreadable source in failures/ and the same rows from both engines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pyarrow")

from emo.errors import EmoError  # noqa: E402
from emo.inference.analyze import analyze, expand_sources, read_table, source_key  # noqa: E402
from emo.samples import moving_face_frames, sample_path, write_video  # noqa: E402

KEYS = ["source", "frame", "face_id"]


def two_faces_frames(n: int) -> list[np.ndarray]:
    """Two sample faces side by side, still: two face ids for the whole clip."""
    a = cv2.resize(cv2.imread(str(sample_path("astronaut"))), (300, 300))
    b = cv2.resize(cv2.imread(str(sample_path("camera"))), (300, 300))
    frame = np.full((480, 640, 3), 96, np.uint8)
    frame[90:390, 10:310], frame[90:390, 330:630] = a, b
    return [frame.copy() for _ in range(n)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Moving face, two faces, no face, a photo, a corrupt file, an empty file, in nested folders."""
    root = tmp_path_factory.mktemp("archive")
    write_video(root / "moving.mp4", moving_face_frames(45), fps=30)
    (root / "day2").mkdir()
    write_video(root / "day2" / "two.mp4", two_faces_frames(30), fps=15)
    write_video(root / "day2" / "nobody.mp4", [np.full((240, 320, 3), 50, np.uint8)] * 20, fps=10)
    shutil.copy(sample_path("astronaut"), root / "photo.png")
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.md").write_text("not media: never listed from a folder")
    return root


def table(out: Path, name: str):
    df = read_table(out, name).to_pandas()
    keys = [k for k in KEYS if k in df.columns]
    return df.sort_values(keys).reset_index(drop=True)


def test_sources_expand_from_folders_globs_lists_and_urls(archive, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{archive / 'photo.png'}\n\nfile://{archive / 'moving.mp4'}\n")
    found = expand_sources(
        [str(archive / "day2"), str(archive / "*.png"), str(listing), str(archive / "day2")]
    )
    assert found == [
        str(archive / "day2" / "nobody.mp4"),
        str(archive / "day2" / "two.mp4"),
        str(archive / "photo.png"),
        str(archive / "moving.mp4"),
    ]  # sorted per folder, each once, list and glob in place
    assert expand_sources(["s3://bucket/clip.mp4"]) == ["s3://bucket/clip.mp4"]


def test_an_archive_into_faces_summary_and_failures(archive, tmp_path):
    out = tmp_path / "out"
    run = analyze([archive], out)
    assert len(run.results) == 6 and len(run.failed) == 2
    faces, summary, failures = table(out, "faces"), table(out, "summary"), table(out, "failures")
    # failures: one line each, the rest analysed
    reasons = dict(zip(failures.source, failures.error))
    assert set(reasons) == {str(archive / "corrupt.mp4"), str(archive / "empty.mp4")}
    assert "empty" in reasons[str(archive / "empty.mp4")] and "\n" not in "".join(reasons.values())
    # faces: 5 frames a second by default -> every 6th frame of the 30 FPS clip, every 3rd at 15
    moving = faces[faces.source == str(archive / "moving.mp4")]
    assert list(moving.frame.unique()) == [0, 6, 12, 18, 24, 30, 36, 42]
    assert np.allclose(moving.time_s, moving.frame / 30, atol=1e-3) and (moving.label == "happy").all()
    assert set(moving.face_id) == {0}  # one person, one id, however far she moves between samples
    two = faces[faces.source == str(archive / "day2" / "two.mp4")]
    assert set(two.face_id) == {0, 1} and len(two) == 2 * 10
    nobody = faces[faces.source == str(archive / "day2" / "nobody.mp4")]
    assert len(nobody) == 10 and nobody.face_id.isna().all() and nobody.label.isna().all()
    photo = faces[faces.source == str(archive / "photo.png")]
    assert len(photo) == 1 and photo.frame.iloc[0] == 0 and np.isnan(photo.time_s.iloc[0])
    probs = faces.dropna(subset=["label"])[
        ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    ]
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    # summary: per source and face
    row = summary[summary.source == str(archive / "moving.mp4")].iloc[0]
    assert row.kind == "video" and row.frames == 8 and row.dominant == "happy"
    assert row.seconds == pytest.approx(8 * 6 / 30) and row.source_frames == 8
    assert 0 <= row.peak_happy_s <= 1.5 and row.share_happy == 1.0
    empty = summary[summary.source == str(archive / "day2" / "nobody.mp4")].iloc[0]
    assert np.isnan(empty.face_id) and empty.frames_without_a_face == 10
    # run.json
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "vgg_s_people" and record["recorded"]["privatetest"]["accuracy"] > 0.6
    assert record["options"]["fps"] == 5.0 and record["failed"] == 2 and record["sources"] == 6
    # nothing half-written is left where a reader looks
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_a_rerun_skips_finished_sources_and_redoes_unfinished_ones(archive, tmp_path):
    out = tmp_path / "out"
    analyze([archive], out)
    before = table(out, "faces")
    moving = source_key(str(archive / "moving.mp4"))
    (out / "summary" / f"{moving}.parquet").unlink()  # as if killed before its summary was written
    (out / "faces" / f".{moving}.123.tmp").write_bytes(b"half")  # and a half-written file
    run = analyze([archive], out)
    assert [r.source for r in run.results] == [str(archive / "moving.mp4")] and run.skipped == 5
    assert table(out, "faces").equals(before)  # no duplicate, no missing row
    with pytest.raises(EmoError, match="other options \\(fps\\): add --overwrite"):
        analyze([archive], out, fps=2)
    run = analyze([archive], out, fps=2, overwrite=True)
    assert run.skipped == 0 and len(run.results) == 6


def test_bad_out_and_unknown_model_fail_before_any_work(archive, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmoError, match="--out .* is a file: give a folder"):
        analyze([archive], tmp_path / "file")
    with pytest.raises(EmoError, match="--model nope: no bundled model or file"):
        analyze([archive], tmp_path / "out2", model="nope")
    assert not (tmp_path / "out2").exists()
    with pytest.raises(EmoError, match="--every 0"):
        analyze([archive], tmp_path / "out3", every=0)


def test_the_command_line_exit_code_and_summary_line(archive, tmp_path):
    from emo.__main__ import main

    code = main(["analyze", str(archive / "photo.png"), "--out", str(tmp_path / "o")])
    assert code == 0
    code = main(
        ["analyze", str(archive / "empty.mp4"), str(archive / "photo.png"), "--out", str(tmp_path / "o")]
    )
    assert code == 1  # one source failed; the photo was already finished


@pytest.mark.slow
def test_two_workers_and_ray_give_the_same_rows_as_one_worker(archive, tmp_path):
    analyze([archive], tmp_path / "one")
    analyze([archive], tmp_path / "two", workers=2)
    for name in ("faces", "summary", "failures"):
        assert table(tmp_path / "two", name).equals(table(tmp_path / "one", name)), name
    pytest.importorskip("ray")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run = analyze([archive], tmp_path / "ray", engine="ray", workers=2)
        assert len(run.failed) == 2
        for name in ("faces", "summary", "failures"):
            assert table(tmp_path / "ray", name).equals(table(tmp_path / "one", name)), name
        (tmp_path / "ray" / "summary" / f"{source_key(str(archive / 'photo.png'))}.parquet").unlink()
        run = analyze([archive], tmp_path / "ray", engine="ray", workers=2)  # resumes on Ray too
        assert [r.source for r in run.results] == [str(archive / "photo.png")]
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_killed_part_way_a_rerun_completes_it_exactly(archive, tmp_path):
    """SIGKILL a run in the middle of the archive; the same command again gives the rows of an
    uninterrupted run, with no duplicate and none missing."""
    many = tmp_path / "many"
    many.mkdir()
    for i in range(8):
        shutil.copy(archive / "moving.mp4", many / f"clip{i}.mp4")
    analyze([many], tmp_path / "whole")
    command = [
        sys.executable,
        "-m",
        "emo",
        "analyze",
        str(many),
        "--out",
        str(tmp_path / "killed"),
        "--every",
        "1",
    ]
    analyze([many], tmp_path / "whole_every1", every=1)
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "killed" / "summary").glob("*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((tmp_path / "killed" / "summary").glob("*.parquet")))
    assert 3 <= done < 8, done  # killed part-way
    assert subprocess.run(command, stderr=subprocess.DEVNULL).returncode == 0
    for name in ("faces", "summary"):
        assert table(tmp_path / "killed", name).equals(table(tmp_path / "whole_every1", name)), name


def test_one_file_two_spellings_is_one_source_and_odd_sources_are_failures(archive, tmp_path, monkeypatch):
    monkeypatch.chdir(archive)
    out = tmp_path / "out"
    run = analyze(["photo.png", str(archive / "photo.png"), "missing-*.mp4", "memory://nope.mp4"], out)
    assert len(run.results) == 3  # the photo once, under one spelling
    failures = table(out, "failures")
    assert list(failures.source) == ["memory://nope.mp4", "missing-*.mp4"]
    assert failures.error.str.contains("FileNotFoundError|not found").all()
    assert not failures.error.str.contains("\n").any()


def test_reports_of_videos_with_the_same_name_do_not_overwrite_each_other(archive, tmp_path):
    for day in ("a", "b"):
        (tmp_path / day).mkdir()
        shutil.copy(archive / "day2" / "two.mp4", tmp_path / day / "screen.mp4")
    analyze([tmp_path / "a", tmp_path / "b"], tmp_path / "out", report=True)
    timelines = sorted((tmp_path / "out" / "report").glob("*/screen_timeline.png"))
    assert len(timelines) == 2 and all(cv2.imread(str(t)) is not None for t in timelines)


def test_a_rerun_still_exits_1_for_sources_that_failed_before(archive, tmp_path):
    from emo.__main__ import main

    args = ["analyze", str(archive / "empty.mp4"), str(archive / "photo.png"), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    assert main(args) == 1  # nothing new to do, but empty.mp4 is still in failures/
    assert main([*args, "--overwrite"]) == 1
