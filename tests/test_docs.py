"""The code and README.md point to sections of benchmarks/README.md that exist.

A comment cites a figure as `benchmarks/README.md, "Heading"`; the headings are the stable
names. Numbered sections ("section 11", "4c") belonged to the dated layout now in
benchmarks/HISTORY.md, and benchmarks/README.md cites that file as `HISTORY.md, section N`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
QUOTED_REFERENCE = re.compile(r'benchmarks/README\.md, "([^"]+)"')
NUMBERED_REFERENCE = re.compile(r"benchmarks/README\.md,?\s+(?:section\s+|§\s*)?\d")
HISTORY_SECTION = re.compile(r"HISTORY\.md, section (\w+)")
ANCHOR_LINK = re.compile(r"\]\(#([^)]+)\)")


def headings(markdown: Path) -> list[str]:
    """The text of every heading outside fenced code blocks."""
    found, fenced = [], False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.append(line.lstrip("#").strip())
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def citing_files() -> list[Path]:
    return [
        *sorted((REPO_ROOT / "src").rglob("*.py")),
        REPO_ROOT / "README.md",
        *sorted(BENCHMARKS.glob("*.py")),
        *sorted((REPO_ROOT / "notebooks").glob("*.ipynb")),
    ]


def joined_text(path: Path) -> str:
    """The file with line breaks (and a comment's leading '#') folded into spaces, so that a
    reference wrapped over two lines reads as one."""
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", citing_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_cited_benchmark_section_is_a_heading_of_benchmarks_readme(path):
    existing = set(headings(BENCHMARKS / "README.md"))
    text = joined_text(path)
    missing = [name for name in QUOTED_REFERENCE.findall(text) if name not in existing]
    assert not missing, f"{path.name} cites sections benchmarks/README.md does not have: {missing}"
    numbered = [m.group(0) for m in NUMBERED_REFERENCE.finditer(text)]
    assert not numbered, f"{path.name} cites numbered sections (cite a heading's name instead): {numbered}"


def test_history_sections_cited_by_benchmarks_readme_exist():
    numbers = {h.split(" ", 1)[0].rstrip(".") for h in headings(BENCHMARKS / "HISTORY.md") if h[:1].isdigit()}
    cited = HISTORY_SECTION.findall(joined_text(BENCHMARKS / "README.md"))
    assert cited, "benchmarks/README.md no longer cites HISTORY.md's sections: drop this test or the pattern is wrong"
    assert set(cited) <= numbers, f"HISTORY.md has no section {sorted(set(cited) - numbers)}"


def test_benchmarks_readme_links_go_to_its_own_headings():
    anchors = {github_anchor(h) for h in headings(BENCHMARKS / "README.md")}
    links = ANCHOR_LINK.findall((BENCHMARKS / "README.md").read_text(encoding="utf-8"))
    assert links, "the index is gone"
    assert set(links) <= anchors, f"links to no heading: {sorted(set(links) - anchors)}"
