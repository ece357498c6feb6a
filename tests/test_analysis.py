"""The analysis functions behind the notebooks."""

from __future__ import annotations

import numpy as np
import pytest

from emo.data.fer2013 import FER2013_CLASSES, TEST, TRAIN
from emo.models.module import EmoModule
from emo.report.analysis import (
    blank_faces,
    class_balance_figure,
    class_counts,
    confident_mistakes,
    duplicate_groups,
    find_data_dir,
    mistakes_figure,
    on_same_needed,
    pareto_front,
    pixel_stats,
    pixel_stats_figure,
    predict_probs,
    reachable_agreement,
    reliability,
    reliability_figure,
    sample_grid,
    synthetic_fer,
    two_yardsticks,
    yardsticks_figure,
)


def test_synthetic_set_duplicates_and_blanks():
    fer = synthetic_fer(per_class=6)
    groups = duplicate_groups(fer.images)
    assert [g.tolist() for g in groups] == [[0, 1]]
    assert blank_faces(fer.images).tolist() == [2]
    counts = class_counts(fer.labels, fer.split)
    assert counts["train"].tolist() == [6] * 7 and counts["test"].tolist() == [2] * 7
    assert sum(c.sum() for c in counts.values()) == len(fer)


def test_duplicates_ignore_near_copies_and_blanks_ignore_dark_faces():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(5, 48, 48), dtype=np.uint8)
    images[3] = images[1]
    images[4] = images[1]
    images[4, 0, 0] ^= 1  # one grey level apart: not a duplicate
    assert [g.tolist() for g in duplicate_groups(images)] == [[1, 3]]
    dark = np.full((2, 48, 48), 5, np.uint8)
    dark[1, ::2] = 40  # dark but with content
    assert blank_faces(dark).tolist() == [0]


def test_pixel_stats_on_known_images():
    images = np.zeros((2, 48, 48), np.uint8)
    images[1] = 255
    s = pixel_stats(images)
    assert s["mean"] == pytest.approx(0.5) and s["std"] == pytest.approx(0.5)
    assert s["face_mean"].tolist() == [0.0, 1.0] and s["face_std"].tolist() == [0.0, 0.0]


def test_reliability_and_ece():
    # Four faces at confidence 0.9 (3 right) and four at 0.6 (2 right).
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    labels = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    rel = reliability(probs, labels, n_bins=10)
    assert rel["count"].sum() == 8 and rel["count"][8] == 4 and rel["count"][5] == 4
    assert rel["accuracy"][8] == pytest.approx(0.75) and rel["confidence"][8] == pytest.approx(0.9)
    assert rel["ece"] == pytest.approx(0.5 * 0.15 + 0.5 * 0.1)
    assert np.isnan(rel["accuracy"][0])  # empty bins stay empty
    perfect = reliability(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]))
    assert perfect["ece"] == pytest.approx(0.0)


def test_confident_mistakes_most_confident_first():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.95, 0.05], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1, 1])  # wrong: 1 (0.8), 2 (0.6), 3 (0.95)
    assert confident_mistakes(probs, labels).tolist() == [3, 1, 2]
    assert confident_mistakes(probs, labels, k=1).tolist() == [3]
    assert confident_mistakes(probs, np.array([0, 1, 0, 0, 1])).size == 0


def test_predict_probs_matches_module_and_figures_draw():
    fer = synthetic_fer(per_class=3)
    model = EmoModule()
    test = fer.split == TEST
    probs = predict_probs(model, fer.images[test], batch_size=5)  # several batches
    assert probs.shape == (test.sum(), 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    idx = confident_mistakes(probs, fer.labels[test], k=4)
    figs = [
        class_balance_figure(class_counts(fer.labels, fer.split)),
        sample_grid(fer.images[fer.split == TRAIN], fer.labels[fer.split == TRAIN], per_class=3),
        pixel_stats_figure(fer.images),
        reliability_figure(reliability(probs, fer.labels[test])),
        mistakes_figure(fer.images[test], probs, fer.labels[test], idx, FER2013_CLASSES),
    ]
    assert all(f.axes for f in figs)


def test_find_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("EMO_TEST_DATA_DIR", raising=False)
    assert find_data_dir([tmp_path / "nothing"]) is None
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    assert find_data_dir([tmp_path / "nothing", tmp_path]) == tmp_path
    monkeypatch.setenv("EMO_DATA_DIR", str(tmp_path))
    assert find_data_dir([]) == tmp_path


def _sixteen_faces():
    """10 faces whose two labels agree, 4 where they differ, 2 with no people label."""
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 3, 4, 4, 5, 6])
    people = np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 6, 6, 0, 0, -1, -1])
    return labels, people


def test_two_yardsticks_splits_answers_by_whether_the_labels_agree():
    labels, people = _sixteen_faces()
    pred = labels.copy()
    pred[9] = 3  # one same face wrong
    pred[[12, 13]] = people[[12, 13]]  # two diff faces answered as people, one as FER-2013, one as neither
    pred[11] = 1
    s = two_yardsticks(pred, labels, people)
    assert (s["n"], s["n_counted"], s["n_same"], s["n_diff"]) == (16, 14, 10, 4)
    assert s["accuracy"] == pytest.approx(12 / 16) and s["agreement"] == pytest.approx(11 / 14)
    assert s["on_same"] == pytest.approx(0.9)
    assert (s["diff_fer"], s["diff_people"], s["diff_neither"]) == pytest.approx((0.25, 0.5, 0.25))


def test_on_same_needed_is_what_a_model_meeting_the_bar_exactly_has():
    labels, people = _sixteen_faces()
    pred = labels.copy()
    pred[9] = 3
    pred[[12, 13]] = people[[12, 13]]  # diff: 2 as FER-2013 (10, 11), 2 as people; no neither
    s = two_yardsticks(pred, labels, people)
    assert s["diff_neither"] == 0
    # This model meets accuracy 13/16 and agreement 11/14 exactly, so it needs what it has...
    assert on_same_needed(s, 13 / 16, 11 / 14) == pytest.approx(s["on_same"])
    # ...one more point of either yardstick needs more, and each diff face answered as neither costs
    assert on_same_needed(s, 14 / 16, 11 / 14) > s["on_same"]
    assert on_same_needed(s, 13 / 16, 11 / 14, diff_neither=0.25) == pytest.approx(0.95)
    assert on_same_needed(s, 1.0, 1.0) > 1  # out of reach: the labels differ on 4 faces


def test_reachable_agreement_is_the_bound_solved_for_agreement():
    labels, people = _sixteen_faces()
    s = two_yardsticks(labels.copy(), labels, people)  # 10 same, 4 diff, 2 accuracy-only faces
    acc = np.array([12, 13, 14, 15, 16]) / 16
    reach = reachable_agreement(s, acc, on_same=0.9)  # 9 same faces right, 2 accuracy-only faces
    # 12/16 needs 1 diff face as FER-2013, 13/16 two...: the others can agree with people.
    assert reach[:4] == pytest.approx([12 / 14, 11 / 14, 10 / 14, 9 / 14])
    for a, r in zip(acc[:4], reach[:4]):
        assert on_same_needed(s, a, r) == pytest.approx(0.9)
    assert np.isnan(reach[4])  # 16 right would need a fifth diff face: there are 4
    # Below the accuracy the same faces give alone, every diff face can agree with people.
    assert reachable_agreement(s, np.array([0.5]), 0.9)[0] == pytest.approx(13 / 14)


def test_pareto_front_keeps_the_points_nothing_beats_on_both():
    pts = np.array([[0.7, 0.6], [0.72, 0.6], [0.69, 0.7], [0.69, 0.65], [0.72, 0.6]])
    assert pareto_front(pts).tolist() == [2, 1, 4]  # ties both stay; (0.7, 0.6) and (0.69, 0.65) lose


def test_yardsticks_figure_plots_every_model_and_the_bar(tmp_path):
    labels, people = _sixteen_faces()
    as_people = np.where(people >= 0, people, labels)
    rows = [
        ("fer", two_yardsticks(labels, labels, people)),
        ("people", two_yardsticks(as_people, labels, people)),
    ]
    worse = labels.copy()
    worse[0] = 1  # one face worse than "fer" on both yardsticks
    rows.append(("worse", two_yardsticks(worse, labels, people)))
    fig = yardsticks_figure(rows, 0.7, 0.8)
    ax = fig.axes[0]
    points = ax.collections[-1].get_offsets()
    assert np.allclose(points, [[1.0, 10 / 14], [12 / 16, 1.0], [15 / 16, 9 / 14]])
    assert sorted(t.get_text() for t in ax.texts) == ["fer", "people"]  # the front only
    labelled = yardsticks_figure(rows, 0.7, 0.8, label=["worse"]).axes[0].texts
    assert sorted(t.get_text() for t in labelled) == ["fer", "people", "worse"]
    assert any("bar" in t.get_text() for t in fig.legends[0].get_texts())
    fig.savefig(tmp_path / "y.png")
    assert (tmp_path / "y.png").stat().st_size > 1000
