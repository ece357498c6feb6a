"""The documentation's numbers of the shipped models are the ones emo/weights/index.json records,
and the README stays a front door (scripts/doc_tables.py writes the generated blocks)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from emo import weights

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import doc_tables  # noqa: E402

README_MAX_WORDS = 1500
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [ROOT / "README.md", ROOT / "MODEL_CARD.md", *PAGES]
#: Pages of measurements in other settings, each under the command that made it: a benchmark
#: without TTA, an earlier model of the same name (changelog), a mix of two models (research).
#: Their shipped models' recorded numbers still come from the index ({{ index.… }}).
OTHER_SETTINGS = {"benchmarks.md", "changelog.md", "research.md"}
PERCENT = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,2})%")


def fractions(record) -> set[float]:
    """Every fraction (0..1) in an index record, at any depth."""
    if isinstance(record, dict):
        return set().union(*(fractions(v) for v in record.values())) if record else set()
    if isinstance(record, float) and 0 <= record <= 1:
        return {record}
    return set()


def outside_blocks(text: str) -> str:
    return doc_tables.BLOCK.sub("", text)


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) <= README_MAX_WORDS, len(text.split())
    for command in ("make demo", "make test", "python -m emo.train model=cnn3 data.augment=strong"):
        assert command in text, command
    for page in ("getting-started", "python-api", "cli", "models", "training", "evaluation"):
        assert f"docs/{page}.md" in text, page


@pytest.mark.parametrize("rel", doc_tables.WRITTEN)
def test_generated_blocks_are_fresh(rel):
    """README.md and MODEL_CARD.md hold the tables the index renders today."""
    text = (ROOT / rel).read_text()
    assert text == doc_tables.fill(text, weights.index()), (
        f"run python scripts/doc_tables.py ({rel} is stale)"
    )


def test_every_shipped_model_has_a_card_section_and_a_table_row():
    card, readme = (ROOT / "MODEL_CARD.md").read_text(), (ROOT / "README.md").read_text()
    for name in weights.available():
        assert f"<!-- emo:card {name} -->" in card, name
        assert f"`{name}`" in doc_tables.models_table(weights.index())
    assert "<!-- emo:models-table -->" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_pages_render_from_the_index(page):
    """Each page's blocks and {{ index.… }} references resolve (the site build runs the same)."""
    index = weights.index()
    out = doc_tables.inline(doc_tables.fill(page.read_text(), index), index)
    assert "{{ index." not in out


@pytest.mark.parametrize("doc", [d for d in DOCS if d.name not in OTHER_SETTINGS], ids=lambda p: p.name)
def test_hand_written_percentages_of_shipped_models_match_the_index(doc):
    """Outside the generated blocks, a line that names a shipped model (`name`) and gives a
    percentage with decimals must give one of that model's recorded numbers."""
    index = weights.index()
    for n, line in enumerate(outside_blocks(doc.read_text()).splitlines(), 1):
        named = [m for m in index if f"`{m}`" in line]
        if not named:
            continue
        known = {round(100 * f, 2) for m in named for f in fractions(index[m])}
        known |= {round(100 * f, 1) for m in named for f in fractions(index[m])}
        for value in PERCENT.findall(line):
            assert float(value) in known, f"{doc.name}:{n}: {value}% for {named} is not in index.json"


def test_inline_numbers_and_unknown_blocks_fail_loudly():
    index = {"m": {"privatetest": {"accuracy": 0.7123, "n": 3589}, "megabytes": 1.7}}
    assert doc_tables.inline("{{ index.m.privatetest.accuracy }}", index) == "71.23%"
    assert (
        doc_tables.inline("{{ index.m.megabytes }} and {{index.m.privatetest.n}}", index) == "1.7 MB and 3589"
    )
    with pytest.raises(ValueError, match="no m.publictest"):
        doc_tables.inline("{{ index.m.publictest.accuracy }}", index)
    with pytest.raises(ValueError, match="unknown generated block"):
        doc_tables.fill("<!-- emo:nope -->\nx\n<!-- /emo:nope -->", index)
