"""`genlab explore` and report.html's explorer in a real browser: headless Chromium (Debian's
`chromium` package) driven by Playwright, with no browser download. Skipped, saying why, where
either is missing; .ci/run installs Chromium when it can.

One screenshot per kind of page is kept in tests/artifacts/ (git-ignored) to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the browser tests need it", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page that records every JavaScript error and console error. bypass_csp only lets
    the test's own probes run (Playwright evaluates strings); the page's scripts are unchanged."""
    context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()


def decodes(page, root: str) -> int:
    return int(page.locator(root).get_attribute("data-decodes") or 0)


def after(page, root: str, action) -> None:
    """Do `action` and wait until the explorer has drawn a new decoding."""
    n = decodes(page, root)
    action()
    page.wait_for_function(f"Number(document.querySelector({root!r}).dataset.decodes || 0) > {n}", timeout=10_000)


def digit_pixels(page, root: str) -> str:
    return page.locator(f"{root} canvas.gx-digit").evaluate("c => c.toDataURL()")


def move_to(page, root: str, fx: float, fy: float) -> None:
    box = page.locator(f"{root} canvas.gx-map").bounding_box()
    page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"explore-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def open_live(page, server) -> str:
    root = "#explorer"
    page.goto(server.url)
    page.wait_for_selector(f"{root}[data-decodes]", timeout=15_000)
    return root


def seed_5_then_interpolate_to_9(page, root: str) -> None:
    """Seed 5 changes the picture; "interpolate" to seed 9 draws a strip."""
    before = digit_pixels(page, root)
    after(page, root, lambda: page.locator(f"{root} input.gx-seed").fill("5") or page.locator(f"{root} input.gx-seed").dispatch_event("change"))
    assert digit_pixels(page, root) != before
    page.locator(f"{root} input.gx-seed-b").fill("9")
    page.locator(f"{root} button.gx-interp").click()
    page.wait_for_selector(f"{root}[data-strips='1']", timeout=10_000)


def test_the_vae_page_decodes_under_the_pointer_and_interpolates_on_drag(page, explore_server, tiny_runs):
    root = open_live(page, explore_server(tiny_runs["vae"]))
    assert page.locator(f"{root} .gx-legend span").count() == 10  # the scatter's digits
    after(page, root, lambda: move_to(page, root, 0.1, 0.1))
    first = digit_pixels(page, root)
    after(page, root, lambda: move_to(page, root, 0.9, 0.9))
    assert digit_pixels(page, root) != first  # the digit follows the pointer
    assert "classifier reads" in page.locator(f"{root} .gx-reading").inner_text()
    assert "distance" in page.locator(f"{root} .gx-nearinfo").inner_text()
    page.mouse.down()
    move_to(page, root, 0.2, 0.8)
    page.mouse.up()
    page.wait_for_selector(f"{root}[data-strips='1']", timeout=10_000)
    assert page.locator(f"{root} .gx-strip .gx-cell").count() == 10
    assert float(page.locator(root).get_attribute("data-latency-ms")) > 0
    screenshot(page, "vae")
    assert page.errors == []


def test_the_gan_page_has_a_seed_sliders_and_seed_interpolation(page, explore_server, tiny_runs):
    root = open_live(page, explore_server(tiny_runs["gan"]))
    sliders = page.locator(f"{root} input.gx-slider")
    assert sliders.count() == 6  # z[2] .. z[7]; the map is z[0] × z[1]
    before = digit_pixels(page, root)
    after(page, root, lambda: move_to(page, root, 0.05, 0.95))
    assert digit_pixels(page, root) != before
    before = digit_pixels(page, root)
    after(page, root, lambda: sliders.nth(0).fill(sliders.nth(0).get_attribute("max")))
    assert digit_pixels(page, root) != before
    seed_5_then_interpolate_to_9(page, root)
    assert "from seed 5 to seed 9" in page.locator(f"{root} .gx-caption").nth(2).inner_text()
    screenshot(page, "gan")
    assert page.errors == []


def test_the_conditional_gan_page_has_a_digit_picker_and_every_digit_row(page, explore_server, tiny_runs):
    root = open_live(page, explore_server(tiny_runs["cgan"]))
    page.wait_for_selector(f"{root}[data-every-rows]", timeout=10_000)
    assert page.locator(f"{root} .gx-every .gx-cell").count() == 10
    before = digit_pixels(page, root)
    after(page, root, lambda: page.locator(f"{root} .gx-picker button[data-digit='7']").click())
    assert page.locator(f"{root} .gx-picker button[aria-pressed='true']").inner_text() == "7"
    assert digit_pixels(page, root) != before
    screenshot(page, "cgan")
    assert page.errors == []


def test_report_html_explores_the_2d_models_from_file_without_a_server(page, tiny_runs, tmp_path):
    from genlab.report import write_report

    lab = tmp_path / "lab"
    for name in ("vae", "cvae"):
        shutil.copytree(tiny_runs[name], lab / name)
    report = write_report(lab)
    page.goto(report.as_uri())
    roots = ["[data-gx-grid='gx-data-vae']", "[data-gx-grid='gx-data-cvae']"]
    for root in roots:
        page.wait_for_selector(f"{root}[data-decodes]", timeout=15_000)
    vae = roots[0]
    page.locator(vae).scroll_into_view_if_needed()
    after(page, vae, lambda: move_to(page, vae, 0.1, 0.1))
    first = digit_pixels(page, vae)
    after(page, vae, lambda: move_to(page, vae, 0.9, 0.9))
    assert digit_pixels(page, vae) != first
    cvae = roots[1]
    page.locator(cvae).scroll_into_view_if_needed()
    before = digit_pixels(page, cvae)
    after(page, cvae, lambda: page.locator(f"{cvae} .gx-picker button[data-digit='3']").click())
    assert digit_pixels(page, cvae) != before
    page.locator(vae).scroll_into_view_if_needed()
    screenshot(page, "report")
    assert page.errors == []


def test_the_flow_page_integrates_a_seed_and_the_step_slider_changes_the_picture(page, explore_server, tiny_runs):
    root = open_live(page, explore_server(tiny_runs["flow"]))
    assert page.locator(f"{root} canvas.gx-map").count() == 0  # no map: seeds and steps
    assert page.locator(f"{root} .gx-trajectory .gx-cell").count() >= 2
    before = digit_pixels(page, root)
    after(page, root, lambda: page.locator(f"{root} input.gx-steps").fill("1"))
    assert page.locator(root).get_attribute("data-steps") == "1"
    assert digit_pixels(page, root) != before  # one step draws another picture than the default
    assert page.locator(f"{root} .gx-trajectory .gx-cell").count() == 2  # noise and the one-step picture
    assert "classifier reads" in page.locator(f"{root} .gx-reading").inner_text()
    seed_5_then_interpolate_to_9(page, root)
    assert page.locator(f"{root} .gx-strip:not(.gx-trajectory) .gx-cell").count() == 10
    screenshot(page, "flow")
    assert page.errors == []


def test_the_conditional_flow_page_has_a_digit_picker_and_a_guidance_slider(page, explore_server, tiny_runs):
    root = open_live(page, explore_server(tiny_runs["cflow"]))
    before = digit_pixels(page, root)
    after(page, root, lambda: page.locator(f"{root} .gx-picker button[data-digit='7']").click())
    assert digit_pixels(page, root) != before
    before = digit_pixels(page, root)
    after(page, root, lambda: page.locator(f"{root} input.gx-guidance").fill("4"))
    assert digit_pixels(page, root) != before
    assert page.errors == []


def test_report_html_explores_a_flows_precomputed_seeds_and_steps(page, tiny_runs, tmp_path):
    from genlab.report import write_report

    lab = tmp_path / "lab"
    shutil.copytree(tiny_runs["flow"], lab / "flow")
    page.goto(write_report(lab).as_uri())
    root = "[data-gx-grid='gx-data-flow']"
    page.wait_for_selector(f"{root}[data-decodes]", timeout=15_000)
    page.locator(root).scroll_into_view_if_needed()
    assert page.locator(root).get_attribute("data-steps") == "32"
    before = digit_pixels(page, root)
    after(page, root, lambda: page.locator(f"{root} input.gx-steps").fill("0"))
    assert page.locator(root).get_attribute("data-steps") == "1" and digit_pixels(page, root) != before
    before = digit_pixels(page, root)
    after(page, root, lambda: page.locator(f"{root} select.gx-seed").select_option("5"))
    assert digit_pixels(page, root) != before
    screenshot(page, "report-flow")
    assert page.errors == []
