"""Choosing a bundled ensemble on PublicTest probabilities (research/choose_ensemble.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from emo.data.fer2013 import FER2013_CLASSES
from emo.paths import PACKAGE_DIR

spec = importlib.util.spec_from_file_location(
    "choose_ensemble", PACKAGE_DIR.parent / "research" / "choose_ensemble.py"
)
choose = sys.modules["choose_ensemble"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(choose)


def member(name, right, labels, params=1000, confident=0.9):
    """A member that puts ``confident`` on the true class where ``right`` is set, on class 0's
    neighbour elsewhere, and a lesser share on the truth there (so averaging can repair it)."""
    n, c = len(labels), len(FER2013_CLASSES)
    p = torch.full((n, c), 0.0)
    wrong = (labels + 1) % c
    p[torch.arange(n), labels] = torch.where(right, confident, 0.35)
    p[torch.arange(n), wrong] = torch.where(right, 1 - confident, 0.65)
    return choose.Member(name, Path(f"{name}.ckpt"), {"none": p, "flip": p.clone()}, params)


def test_the_complementary_pair_wins_and_ties_prefer_fewer_members():
    labels = torch.arange(60) % 7
    a_right = torch.arange(60) < 42  # a: first 70% right
    b_right = torch.arange(60) >= 18  # b: last 70% right; a and b disagree on 36 faces
    c_right = a_right.clone()  # c: a's twin, adds nothing
    members = [member("a", a_right, labels), member("b", b_right, labels), member("c", c_right, labels)]
    people = torch.where(torch.arange(60) % 2 == 0, labels, torch.tensor(-1))
    groups, singles = choose.rank(members, labels, people, max_members=3)
    assert round(singles[0].accuracy, 4) == 0.7
    best = groups[0]
    # Averaged, each face's right member (0.9) outweighs the wrong one's 0.65: all 60 faces right.
    assert best.accuracy == 1.0 and set(best.members) in ({"a", "b"}, {"b", "c"})
    assert best.agreement == 1.0
    assert {len(g.members) for g in groups} == {2, 3}
    # All three are right everywhere too, but rank after the pairs that are: fewer members win ties.
    order = [(g.members, g.tta) for g in groups]
    three = order.index((("a", "b", "c"), "flip"))
    assert groups[three].accuracy == 1.0 and three > order.index((("a", "b"), "none"))
    twins = next(g for g in groups if g.members == ("a", "c"))
    assert round(twins.accuracy, 4) == 0.7  # a member's twin adds nothing


def test_subsets_over_the_bundle_limit_are_left_out():
    labels = torch.arange(14) % 7
    right = torch.ones(14, dtype=torch.bool)
    big = [member(n, right, labels, params=5_000_000) for n in "abc"]  # 10 MB each in fp16
    groups, singles = choose.rank(big, labels, max_members=3)
    assert len(singles) == 6  # three members x two TTAs
    assert groups and all(len(g.members) == 2 and g.mb == 20.0 for g in groups)
    # A teacher set for soft targets is never bundled: --max-mb 0 lifts the limit.
    groups, _ = choose.rank(big, labels, max_members=3, max_mb=float("inf"))
    assert {len(g.members) for g in groups} == {2, 3}
    # int8 weights (--int8) take one byte a parameter: all three fit in 15 MB
    groups, _ = choose.rank(big, labels, max_members=3, bytes_per_param=1)
    assert {len(g.members) for g in groups} == {2, 3} and max(g.mb for g in groups) == 15.0


def test_ranking_scores_as_the_metrics_module_does():
    """rank() counts accuracy and agreement itself (fast); they must be score()'s numbers."""
    from emo.report.metrics import score

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (200,), generator=g)
    people = torch.where(torch.rand(200, generator=g) < 0.3, torch.tensor(-1), torch.randint(0, 7, (200,)))
    probs = [torch.rand(200, 7, generator=g).softmax(1) for _ in range(3)]
    members = [choose.Member(n, Path(n), {"none": p}, 1) for n, p in zip("abc", probs)]
    groups, _ = choose.rank(members, labels, people, max_members=3)
    for grp in groups:
        ref = score(
            torch.stack([probs["abc".index(n)] for n in grp.members]).mean(0),
            labels,
            list(FER2013_CLASSES),
            people,
        )
        assert abs(grp.accuracy - ref["accuracy"]) < 1e-6 and abs(grp.agreement - ref["agreement"]) < 1e-6
