"""Write a compact copy of FER-2013 (``fer2013.npz.xz``) that every emo command reads.

    python -m emo.data.compact OUT_DIR [--data-dir DIR] [--splits train val]

Train + val is ~57 MB, small enough to carry to a GPU machine; leave the test split (PrivateTest)
out and score it back where the full data lives. FER+ votes (``fer2013new.csv``) found beside the
data come along, cut to the same rows, so the copy reports agreement with people too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emo.data.fer2013 import COMPACT_NAME, SPLIT_NAMES, USAGE_TO_SPLIT, load_fer2013, write_compact
from emo.data.ferplus import FERPLUS_NAME, find_ferplus
from emo.errors import exit_on_emo_error


@exit_on_emo_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help=f"folder to write {COMPACT_NAME} into")
    parser.add_argument("--data-dir", default=os.environ.get("EMO_DATA_DIR", "data/fer2013"))
    parser.add_argument("--splits", nargs="+", choices=SPLIT_NAMES, default=list(SPLIT_NAMES))
    args = parser.parse_args(argv)
    arrays = load_fer2013(args.data_dir)
    codes = [SPLIT_NAMES.index(s) for s in args.splits]
    path = write_compact(arrays, Path(args.out_dir) / COMPACT_NAME, codes)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; splits {', '.join(args.splits)})", file=sys.stderr
    )
    votes = find_ferplus(args.data_dir)
    if votes is not None:  # its rows follow FER-2013's: keep those of the kept splits, in order
        usages = {u for u, code in USAGE_TO_SPLIT.items() if code in codes}
        lines = votes.read_text().splitlines(keepends=True)
        kept = [lines[0], *(line for line in lines[1:] if line.split(",", 1)[0] in usages)]
        (Path(args.out_dir) / FERPLUS_NAME).write_text("".join(kept))
        print(
            f"wrote {Path(args.out_dir) / FERPLUS_NAME} ({len(kept) - 1} rows of FER+ votes)", file=sys.stderr
        )


if __name__ == "__main__":
    main()
