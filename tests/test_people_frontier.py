"""How far shifts and weighted pairs move agreement with people (research/people_frontier.py)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from emo.paths import PACKAGE_DIR

spec = importlib.util.spec_from_file_location(
    "people_frontier", PACKAGE_DIR.parent / "research" / "people_frontier.py"
)
pf = sys.modules["people_frontier"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(pf)

LAMS = [round(-1 + 0.1 * i, 2) for i in range(31)]


def faces():
    """20 faces, 3 classes: labels and people agree on 0-9; on 10-19 the label says 0, people 1."""
    labels = torch.zeros(20, dtype=torch.long)
    labels[:10] = torch.arange(10) % 3
    people = labels.clone()
    people[10:] = 1
    return labels, people


def test_the_shift_trades_label_accuracy_for_agreement_down_to_the_floor():
    labels, people = faces()
    p = torch.full((20, 3), 0.05)
    p[torch.arange(10), labels[:10]] = 0.9  # right and sure where the labels agree
    p[10:, 0], p[10:, 1] = 0.55, 0.40  # leaning to the FER-2013 label where they differ
    shift = torch.tensor([-1.0, 1.0, 0.0])  # people use class 1 more, class 0 less
    free = pf.best_point(("m",), 1.0, p, labels, people, shift, LAMS, 0.0)
    assert free.as_is == (1.0, 0.5)
    assert free.agreement == 1.0 and free.accuracy == 0.5  # shifted over to people's answers
    assert 0 < free.lam < 1  # the smallest shift that gets there: ties go to the smaller
    kept = pf.best_point(("m",), 1.0, p, labels, people, shift, LAMS, 0.9)
    assert kept.lam == 0.0 and (kept.accuracy, kept.agreement) == (1.0, 0.5)  # any move costs accuracy
    assert pf.best_point(("m",), 1.0, p * 0 + 1 / 3, labels, people, shift, LAMS, 0.9) is None


def test_a_pair_of_complementary_models_beats_each_alone_and_a_model_paired_with_itself_changes_nothing():
    labels, people = faces()
    eye = torch.eye(3)
    a = torch.where(
        (torch.arange(20) < 15)[:, None], 0.8 * eye[labels] + 0.1, 0.55 * eye[(labels + 2) % 3] + 0.15
    )
    b = torch.where(
        (torch.arange(20) >= 5)[:, None], 0.8 * eye[labels] + 0.1, 0.55 * eye[(labels + 2) % 3] + 0.15
    )
    shift = torch.zeros(3)  # no shift: only the mixing moves anything
    singles, pairs = pf.frontier({"a": a, "b": b, "a2": a.clone()}, labels, people, shift, [0.0], [0.5], 0.0)
    assert [round(p.accuracy, 2) for p in singles] == [0.75, 0.75, 0.75]
    best = pairs[0]
    assert set(best.members) == {"a", "b"} or set(best.members) == {"a2", "b"}
    assert best.accuracy == 1.0  # each face's sure member outweighs the other's 0.7
    twins = next(p for p in pairs if set(p.members) == {"a", "a2"})
    assert (twins.accuracy, twins.agreement) == (singles[0].accuracy, singles[0].agreement)


def test_the_script_reads_runs_and_prints_the_frontier(trained_run, ferplus_dir, tmp_path, capsys):
    ckpt = json.loads((trained_run[0] / "metrics.json").read_text())["checkpoint"]
    twin = tmp_path / "twin.ckpt"
    twin.write_bytes(open(ckpt, "rb").read())
    out = tmp_path / "frontier.json"
    argv = [
        ckpt,
        str(twin),
        "--min-accuracy",
        "0",
        "--bar",
        "1.01",
        "--data-dir",
        str(ferplus_dir),
        "--out",
        str(out),
    ]
    pf.main(argv)
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert len(record["singles"]) == 2 and len(record["pairs"]) == 3  # one pair, three shares
    single = record["singles"][0]
    assert all(p["agreement"] == pytest.approx(single["agreement"]) for p in record["pairs"])  # twins
    assert f"{single['agreement']:.2%}" in printed and "under the bar's 101%" in printed
    with pytest.raises(SystemExit, match="strictly between 0 and 1"):
        pf.main([*argv, "--weights", "1.0"])


def test_without_the_votes_or_the_data_it_says_what_is_missing(fer_dir, tmp_path):
    with pytest.raises(SystemExit, match="no FER\\+ votes .* agreement with people needs them"):
        pf.main(["vgg_s", "--data-dir", str(fer_dir)])
    with pytest.raises(SystemExit, match="FER-2013 not found in .*nowhere: set EMO_DATA_DIR"):
        pf.main(["vgg_s", "--data-dir", str(tmp_path / "nowhere")])


def test_on_one_view_its_shift_is_exactly_the_one_prior_shift_writes():
    labels, people = faces()
    logits = torch.randn(20, 3, generator=torch.Generator().manual_seed(0)) * 2
    shift = torch.tensor([-1.0, 1.0, 0.3])
    exact = pf.scan(
        logits[None], shift, labels, people, LAMS
    )  # prior_shift.py's scan of the network's logits
    point = pf.best_point(("m",), 1.0, logits.softmax(-1), labels, people, shift, LAMS, 0.0)
    assert (point.lam, point.accuracy, point.agreement) == pf.choose(exact, 0.0)
