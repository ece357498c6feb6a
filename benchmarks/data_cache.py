"""Decode FER-2013 once, then time cache reloads (the DataModule's setup path).

python benchmarks/data_cache.py [DATA_DIR]     # default: $EMO_DATA_DIR or data/fer2013
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from emo.data import load_fer2013


def main() -> None:
    data_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EMO_DATA_DIR", "data/fer2013")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        arrays = load_fer2013(data_dir, cache_dir=cache)
        decode = time.perf_counter() - t0
        reloads = []
        for _ in range(5):
            t0 = time.perf_counter()
            load_fer2013(data_dir, cache_dir=cache)
            reloads.append(time.perf_counter() - t0)
    reload = min(reloads)
    print(f"source: {arrays.source} ({len(arrays):,} faces, {arrays.images.nbytes / 1e6:.1f} MB as uint8)")
    print("| step | seconds | vs decode |\n|---|---|---|")
    print(f"| first load (decode + write cache) | {decode:.2f} | 1.00 |")
    print(f"| cached reload (best of 5) | {reload:.3f} | {reload / decode:.3f} |")


if __name__ == "__main__":
    main()
