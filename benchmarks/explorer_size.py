"""Size of report.html's explorer per 2-D run (benchmarks/README.md, "report.html's explorer size").

    python benchmarks/explorer_size.py RUN_DIR [RUN_DIR ...]

Builds the explorer block that `genlab lab` / `genlab report` embed in report.html for a run with
a 2-D code (decodings on the lattice as a PNG sprite, the nearest training digits, per-cell
readings, test codes, the page's script and style) and prints one JSON line per run: its size in
MB and the seconds it took to build. Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from genlab.explore.offline import explorer_block


def main(run_dirs: list[str]) -> None:
    for run_dir in run_dirs:
        start = time.perf_counter()
        block = explorer_block(Path(run_dir))
        seconds = time.perf_counter() - start
        if not block:
            print(json.dumps({"run": run_dir, "explorer": None, "why": "not a 2-D code: report.html has no explorer for it"}))
            continue
        print(json.dumps({"run": run_dir, "explorer_mb": round(len(block.encode()) / 1e6, 2), "build_s": round(seconds, 1)}))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/explorer_size.py RUN_DIR [RUN_DIR ...]")
    main(sys.argv[1:])
