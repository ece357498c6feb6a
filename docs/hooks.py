"""mkdocs hook: every page's generated blocks and ``{{ index.… }}`` numbers are filled from
emo/weights/index.json at build time (scripts/doc_tables.py renders them), so no page of the
site holds a model's number by hand. The model card page is MODEL_CARD.md itself, its links
made relative to this folder."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Pages that are a file of the repository's root, shown as they are on GitHub.
ROOT_PAGES = {"model-card.md": "MODEL_CARD.md"}


def _tables():
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    import doc_tables

    return doc_tables


def on_page_markdown(markdown: str, page, config, files) -> str:
    source = ROOT_PAGES.get(page.file.src_uri)
    if source:
        markdown = re.sub(r"\]\(docs/", "](", (ROOT / source).read_text())
    tables = _tables()
    index = tables.weights.index()
    return tables.inline(tables.fill(markdown, index), index)
