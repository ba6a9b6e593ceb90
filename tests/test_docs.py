"""The README and docs/ hold together: the README stays short enough to read top to bottom, every
relative link (and #anchor) lands on something that exists, and no page of docs/ is an orphan.

Anchors are GitHub's: a heading's text in lower case, without its punctuation (backticks,
parentheses, colons, `=`...), spaces as hyphens, and `-1`, `-2` for repeated headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target); a target has no spaces (an optional "title" may follow).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """Every relative link of a page whose file, or whose #anchor in a Markdown file, is missing."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(
                f"{target}: no {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}"
            )
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


def linked_pages(page: Path) -> set[Path]:
    return {
        (page.parent / target.partition("#")[0]).resolve()
        for target in LINK.findall(prose(page.read_text()))
        if target.partition("#")[0] and not re.match(r"[a-z][a-z0-9+.-]*:", target)
    }


PAGES = [README, *sorted(DOCS.glob("*.md"))]
# The generated results page links its runs, charts and docs/: each must land too.
RESULTS_PAGE = ROOT / "results" / "README.md"


def test_the_readme_is_short_enough_to_read_top_to_bottom() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_there_are_docs_to_link() -> None:
    assert (DOCS / "README.md").exists()
    assert len(PAGES) > 2


@pytest.mark.parametrize("page", [*PAGES, RESULTS_PAGE], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme_or_the_docs_index() -> None:
    linked = linked_pages(README) | linked_pages(DOCS / "README.md")
    orphans = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert orphans == []


# The checks themselves, on pages made for them: a check that cannot fail checks nothing.


def test_slugs_follow_github() -> None:
    assert slug("Open loop: a fixed arrival rate (`LOAD=open`)") == (
        "open-loop-a-fixed-arrival-rate-loadopen"
    )
    assert slug("Capacity at an SLO (`make capacity`)") == "capacity-at-an-slo-make-capacity"
    assert slug("The failure map ([full report](reference/map/summary.md))") == (
        "the-failure-map-full-report"
    )


def test_a_missing_file_a_missing_anchor_and_a_repeated_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Part\n\n## Part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#part-1) [same page](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [here](#nothing)\n\n"
        "```sh\n[not a link](nowhere.md)\n```\n`[nor this](nowhere.md)`\n"
    )
    broken = broken_links(page)
    assert [b.split(":")[0] for b in broken] == ["missing.md", "other.md#nowhere", "#nothing"]
