"""Pointer-to-picture latency of `genlab explore` (benchmarks/README.md, "Explorer").

    python benchmarks/explore_latency.py RUN_DIR [RUN_DIR ...]

For each run: starts the explorer's server on loopback, opens the page in headless Chromium
(Debian's `chromium`, driven by Playwright), moves the pointer to 60 places one after another and
reads the page's own measure (from the pointer event to the decoded digit drawn on its canvas,
server round trip included); also times `Explorer.decode` of one code in-process.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import threading
import time

from playwright.sync_api import sync_playwright

from genlab.explore import make_server


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(run_dir: str, moves: int = 60) -> None:
    server = make_server(run_dir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    explorer = server.explorer
    body = {"z": [explorer.origin.tolist()], **({"digits": [0]} if explorer.model.conditional else {})}
    direct = []
    for _ in range(moves):
        start = time.perf_counter()
        explorer.decode(body)
        direct.append((time.perf_counter() - start) * 1000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"))
        page = browser.new_page(bypass_csp=True)  # for wait_for_function; the page is unchanged
        page.goto(server.url)
        page.wait_for_selector("#explorer[data-decodes]")
        box = page.locator("canvas.gx-map").bounding_box()
        latencies = []
        for i in range(moves):
            n = int(page.locator("#explorer").get_attribute("data-decodes"))
            page.mouse.move(box["x"] + 20 + (i * 37) % 380, box["y"] + 20 + (i * 53) % 380)
            page.wait_for_function(f"Number(document.querySelector('#explorer').dataset.decodes) > {n}")
            latencies.append(float(page.locator("#explorer").get_attribute("data-latency-ms")))
        browser.close()
    server.shutdown()
    print(
        f"{explorer.run.name:6s} pointer->picture median {statistics.median(latencies):5.1f} ms, p90 {percentile(latencies, 0.9):5.1f} ms; "
        f"Explorer.decode median {statistics.median(direct):5.1f} ms"
    )


if __name__ == "__main__":
    for run_dir in sys.argv[1:]:
        measure(run_dir)
