"""The documentation's links hold: every relative link in README.md, docs/ and the other guides
names a file of the repository, every #anchor a heading of its page, and
every repository path the text names in code (`stores/objects.py`) is there."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "bench").glob("*.md"),
        ROOT / "tests" / "README.md",
        ROOT / "runners" / "SCALING.md",
    ]
)
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target), the target up to a space or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
# `folder/file.ext`, or `folder/file.py::name`: a path the text says is in the repository
CODE_PATH = re.compile(r"`([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*\.[a-z]{1,5})(?:::\w+)?`")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped
    (inline code's backticks too), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    targets = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        targets += LINK.findall(INLINE_CODE.sub("", line))
    return targets


def test_slug_is_githubs() -> None:
    assert slug("The change feed: `run --changes` and `changes --since`") == (
        "the-change-feed-run---changes-and-changes---since"
    )
    assert slug("From Python: `run_import`") == "from-python-run_import"
    assert slug("Beam's local runner") == "beams-local-runner"


def test_links_are_found_outside_code() -> None:
    page = "see [a](x.md#b) and `[c](not-a-link)`\n```\n[d](in-a-block)\n```\n"
    assert [LINK.findall(INLINE_CODE.sub("", line)) for line in prose_lines(page)] == [["x.md#b"]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_in_code_exists(page: Path) -> None:
    """A path is named from the repository's root or from the page's folder
    (tests/README.md names `spec/test_export.py`)."""
    named = CODE_PATH.findall(page.read_text(encoding="utf-8"))
    bases = [ROOT, page.parent]
    missing = sorted(
        {
            p
            for p in named
            if any((base / p.split("/")[0]).is_dir() for base in bases)
            and not any((base / p).exists() for base in bases)
        }
    )
    assert not missing, f"{page.relative_to(ROOT)} names files that are not there: {missing}"
