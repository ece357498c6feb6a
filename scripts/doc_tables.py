"""The models' numbers in README.md, MODEL_CARD.md and docs/, generated from emo/weights/index.json.

    python scripts/doc_tables.py            # rewrite the generated blocks of README.md and MODEL_CARD.md
    python scripts/doc_tables.py --check    # exit 1 if a block is stale (tests/test_docs_numbers.py)

A generated block is the text between ``<!-- emo:KIND [ARG] -->`` and ``<!-- /emo:KIND -->``;
KIND is one of :data:`BLOCKS`. Inline, ``{{ index.NAME.SPLIT.KEY }}`` (e.g.
``{{ index.vgg_s_people.privatetest.agreement }}``) becomes that number of the index, a fraction
written as a percentage. The documentation site fills both at build time (``docs/hooks.py``), so
its pages never hold a number by hand; the README and the model card are plain Markdown files
that GitHub shows as they are, so this script writes theirs and the test checks them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from emo import weights

ROOT = Path(__file__).resolve().parents[1]
#: The files whose blocks this script writes (docs/ pages are filled at build time instead).
WRITTEN = ("README.md", "MODEL_CARD.md")
BLOCK = re.compile(r"(<!-- emo:([a-z-]+)(?: ([a-z0-9_]+))? -->\n)(.*?)(<!-- /emo:\2 -->)", re.S)
INLINE = re.compile(r"\{\{ *index\.([a-z0-9_]+)((?:\.[a-z0-9_]+)+) *\}\}")
# The fractions among the index's numbers (written as percentages).
FRACTIONS = {"accuracy", "macro_f1", "agreement", "publictest"}


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def aliases(index: dict) -> dict[str, list[str]]:
    """Each bundled model's purpose names (``default``, ``fast``, ...)."""
    out: dict[str, list[str]] = {}
    for alias in weights.ALIASES:
        try:
            out.setdefault(weights.resolve_name(alias), []).append(alias)
        except Exception:  # noqa: BLE001 - an alias no bundled model answers (e.g. no FER+ model)
            continue
    return out


def fer2013(record: dict) -> dict:
    """A record's scores against FER-2013's labels with its agreement with people (the seven-class
    FER+ majority): its own for a FER-2013 model, its cross scores for a FER+ model."""
    return record if record.get("labels", "fer2013") == "fer2013" else record["cross"]["fer2013"]


def _order(index: dict) -> list[str]:
    """The default first, then the other aliases' models, then the rest by name."""
    named = aliases(index)
    first = [n for a in weights.ALIASES for n, al in named.items() if al and al[0] == a]
    return list(dict.fromkeys([*first, *sorted(index)]))


def _name(name: str, index: dict) -> str:
    tags = aliases(index).get(name, [])
    return f"`{name}`" + (f" ({', '.join(f'`{t}`' for t in tags)})" if tags else "")


def models_table(index: dict) -> str:
    """The README's table: what each model is for, its size and cost, both yardsticks."""
    rows = [
        "| model | what it is for | classes | ONNX file | multiply-adds a face | FER-2013 accuracy | agrees with people | TTA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in _order(index):
        r = index[name]
        test = fer2013(r)["privatetest"]
        people = test.get("agreement")
        rows.append(
            f"| {_name(name, index)} | {r.get('summary', '')} | {r['classes']} | {r['megabytes']:.1f} MB "
            f"| {r['macs'] / 1e6:.0f} M | {pct(test['accuracy'])} | {pct(people) if people is not None else '—'} "
            f"| {r['tta']} |"
        )
    return "\n".join(rows) + "\n"


def models_full(index: dict) -> str:
    """The documentation's table: both splits, both yardsticks, the files and the backend."""
    rows = [
        "| model | classes | params | multiply-adds | ONNX file | int8 file | runs as | TTA "
        "| PublicTest acc | PublicTest agreement | PrivateTest acc | PrivateTest macro-F1 | PrivateTest agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in _order(index):
        r = index[name]
        pub, test = fer2013(r)["publictest"], fer2013(r)["privatetest"]
        int8 = f"{r['int8']['megabytes']:.1f} MB" if "int8" in r else "—"
        rows.append(
            f"| {_name(name, index)} | {r['classes']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.0f} M "
            f"| {r['megabytes']:.1f} MB | {int8} | {r['backend']} "
            f"| {r['tta']} | {pct(pub['accuracy'])} | {pct(pub['agreement']) if 'agreement' in pub else '—'} "
            f"| {pct(test['accuracy'])} | {pct(test['macro_f1'])} "
            f"| {pct(test['agreement']) if 'agreement' in test else '—'} |"
        )
    return "\n".join(rows) + "\n"


def card(index: dict, name: str) -> str:
    """One model's figures for its model-card section: the recipe, both yardsticks on both
    splits, the other label set, the files, and per-class F1 with the weakest classes named."""
    r = index[name]
    other = next(iter(r.get("cross", {})), None)
    labels = "FER-2013's labels" if r["labels"] == "fer2013" else "FER+'s majority labels"
    lines = [
        f"- **Network**: `{r['arch']}`, {r['params'] / 1e6:.2f} M parameters, {r['macs'] / 1e6:.0f} M "
        f"multiply-adds a face; `emo/weights/{name}.onnx` {r['megabytes']:.1f} MB"
        + (f", int8 file {r['int8']['megabytes']:.1f} MB" if "int8" in r else "")
        + f"; runs as `{r['backend']}` by default.",
        f"- **Recipe**: `{r['command']}`",
        f"- **Labels**: {r['classes']} classes, trained on {labels}; test-time augmentation `{r['tta']}`.",
        "",
        "| split, labels | accuracy | macro-F1 | agrees with people (FER+ majority) | faces |",
        "|---|---|---|---|---|",
    ]
    own = "FER-2013 labels" if r["labels"] == "fer2013" else f"FER+ majority, {r['classes']} classes"
    for split, title in (("publictest", "PublicTest (selection)"), ("privatetest", "PrivateTest (reported)")):
        s = r[split]
        title = f"{title}, {own}"
        people = f"{pct(s['agreement'])} of {s['agreement_n']:,}" if "agreement" in s else "—"
        lines.append(f"| {title} | {pct(s['accuracy'])} | {pct(s['macro_f1'])} | {people} | {s['n']:,} |")
    if other:
        s = r["cross"][other]["privatetest"]
        if other == "ferplus":  # the FER+ test protocol: faces where most of the annotators agree
            title, people = "PrivateTest, FER+ test protocol (clear majority)", "—"
        else:  # contempt dropped; agreement over the seven classes, as for the other models
            title, people = "PrivateTest, FER-2013 labels", f"{pct(s['agreement'])} of {s['agreement_n']:,}"
        lines.append(f"| {title} | {pct(s['accuracy'])} | {pct(s['macro_f1'])} | {people} | {s['n']:,} |")
    f1 = r["privatetest"].get("per_class_f1")
    if f1:
        lines += [
            "",
            "| PrivateTest F1 | " + " | ".join(f1) + " |",
            "|---|" + "---|" * len(f1),
            "| | " + " | ".join(f"{v:.2f}" for v in f1.values()) + " |",
        ]
        weakest = sorted(f1, key=f1.get)[:2]
        lines += [
            "",
            f"Weakest classes (PrivateTest F1): {', '.join(f'{c} ({f1[c]:.2f})' for c in weakest)}.",
        ]
    return "\n".join(lines) + "\n"


#: What each purpose name is for, and what it costs (the model it names comes from the index).
PURPOSES = {
    "default": (
        "people's photos, the webcam, video: the labels most people would give",
        "real time on one CPU core",
    ),
    "fast": ("many faces at once, a slow device", "the least accurate on both yardsticks"),
    "leaderboard": (
        "FER-2013's own test (the field's leaderboard)",
        "several networks a face: not for the webcam",
    ),
    "ferplus": (
        "eight classes, contempt included, as the FER+ annotators labelled",
        "trails on FER-2013's labels",
    ),
}


def purposes_table(index: dict) -> str:
    """The purpose names, the model each names today, what it is for and what it costs."""
    rows = [
        "| purpose name | model today | pick it for | what it costs | file it runs |",
        "|---|---|---|---|---|",
    ]
    for alias, (use, cost) in PURPOSES.items():
        try:
            name = weights.resolve_name(alias)
        except Exception:  # noqa: BLE001 - no bundled model answers this purpose
            continue
        r = index[name]
        int8 = r.get("backend") == "onnx-int8"
        size = r["int8"]["megabytes"] if int8 else r["megabytes"]
        rows.append(
            f"| `{alias}` | `{name}` | {use} | {cost} | {size:.2f} MB ({'int8' if int8 else 'float'}) |"
        )
    return "\n".join(rows) + "\n"


BLOCKS: dict[str, Callable[..., str]] = {
    "models-table": models_table,
    "models-full": models_full,
    "purposes": purposes_table,
    "card": card,
}


def fill(text: str, index: dict) -> str:
    """``text`` with every generated block rendered afresh from ``index``."""

    def block(m: re.Match) -> str:
        kind, arg = m.group(2), m.group(3)
        if kind not in BLOCKS:
            raise ValueError(f"unknown generated block emo:{kind} (known: {', '.join(BLOCKS)})")
        if kind == "card" and arg not in index:
            raise ValueError(f"emo:card {arg}: no bundled model of that name in the index")
        body = BLOCKS[kind](index, arg) if kind == "card" else BLOCKS[kind](index)
        return m.group(1) + body + m.group(5)

    return BLOCK.sub(block, text)


def inline(text: str, index: dict) -> str:
    """``text`` with each ``{{ index.NAME.KEY... }}`` replaced by that number."""

    def value(m: re.Match) -> str:
        name, keys = m.group(1), m.group(2).strip(".").split(".")
        v = index.get(name)
        for k in keys:
            if not isinstance(v, dict) or k not in v:
                raise ValueError(f"{m.group(0)}: the index has no {'.'.join([name, *keys])}")
            v = v[k]
        if keys[-1] in FRACTIONS:
            return pct(v)
        return f"{v:.1f} MB" if keys[-1] == "megabytes" else str(v)

    return INLINE.sub(value, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file's generated blocks are stale")
    args = parser.parse_args()
    index, stale = weights.index(), []
    for rel in WRITTEN:
        path = ROOT / rel
        text = path.read_text()
        new = fill(text, index)
        if new != text:
            stale.append(rel)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        sys.exit(f"stale generated blocks in {', '.join(stale)}: run python scripts/doc_tables.py")
    print("rewrote " + ", ".join(stale) if stale else "generated blocks up to date")


if __name__ == "__main__":
    main()
