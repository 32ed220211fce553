"""The README stays a short entry point, and no relative link in it or in docs/ is dead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: Inline Markdown links and images: [text](target) or ![alt](target "title").
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def relative_links(markdown: str) -> list[str]:
    """Targets of the relative links of a Markdown text (code blocks and spans left out)."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", t, re.IGNORECASE)]


def test_relative_links_finds_links_outside_code_only() -> None:
    text = (
        'See [the guide](docs/guide.md#install), ![fig](img/a.png "title"),\n'
        "[site](https://example.org), [here](#top), `[not](code.md)`.\n"
        "```\n[nor](block.md)\n```\n"
    )
    assert relative_links(text) == ["docs/guide.md#install", "img/a.png"]


def test_readme_is_at_most_250_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file(page: Path) -> None:
    dead = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).is_file():
            dead.append(target)
    assert dead == [], f"{page.relative_to(ROOT)} links to missing files: {dead}"


def test_the_docs_link_to_each_other() -> None:
    readme = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/index.md" in readme and "docs/model-card.md" in readme
