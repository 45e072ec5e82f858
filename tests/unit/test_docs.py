"""The docs hold together: every relative link between README and the docs pages, every #anchor, and every
docs page (and section) the code cites exists; every page is in the site's nav; the README stays short.

Anchors are computed twice, as the code host (GitHub) and as mkdocs (Python-Markdown's toc) make them,
and a link must work on both, since the same files are read on the code host and built into the site.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "RESULTS.md", *DOCS.rglob("*.md")])

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
# `docs/page.md` or `docs/page.md, "Section"` (the section may run on over comment lines)
CITATION = re.compile(r"(docs/[\w./-]+\.md)(?:,\s*(?:#\s*)?\"([^\"]{1,200})\")?")


def prose(text: str) -> str:
    """The text links are read from: no fenced code, no HTML comments."""
    return COMMENT.sub("", FENCE.sub("", text))


def heading_texts(path: Path) -> list[str]:
    """Each heading as rendered text: no code marks, links reduced to their text, no emphasis marks."""
    texts = []
    for match in HEADING.finditer(prose(path.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))
        texts.append(re.sub(r"[`*]", "", text).strip())
    return texts


def github_slug(text: str) -> str:
    text = text.lower()
    text = "".join(char for char in text if char.isalnum() or char in " -_")
    return text.replace(" ", "-")


def mkdocs_slug(text: str) -> str:
    """Python-Markdown's toc.slugify, which mkdocs uses by default."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> tuple[set[str], set[str]]:
    """The anchors of a page as the code host makes them, and as mkdocs does (both number repeats)."""
    host: set[str] = set()
    site: set[str] = set()
    for text in heading_texts(path):
        for slug, found, joiner in ((github_slug(text), host, "-"), (mkdocs_slug(text), site, "_")):
            candidate, count = slug, 0
            while candidate in found:
                count += 1
                candidate = f"{slug}{joiner}{count}"
            found.add(candidate)
    return host, site


def links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def broken_link(page: Path, target: str) -> str | None:
    """Why a relative link from `page` does not resolve, or None."""
    file_part, _, anchor = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    if not destination.exists():
        return f"{page.relative_to(ROOT)}: link to {target}: no such file"
    if anchor and destination.suffix == ".md":
        host, site = anchors(destination)
        if anchor not in host or anchor not in site:
            return f"{page.relative_to(ROOT)}: link to {target}: no such section (code host: {anchor in host}, " \
                   f"mkdocs: {anchor in site})"
    if page.is_relative_to(DOCS) and not destination.is_relative_to(DOCS):
        return f"{page.relative_to(ROOT)}: link to {target} leaves docs/, which the site does not hold"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert [problem for target in links(page) if (problem := broken_link(page, target))] == []


def citations() -> list[tuple[str, str, str | None]]:
    found = []
    for source in sorted((ROOT / "queuectl").rglob("*.py")):
        text = source.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            section = match.group(2)
            if section is not None:
                section = " ".join(re.sub(r"\n[ \t]*#?", " ", section).split())
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{source.relative_to(ROOT)}:{line}", match.group(1), section))
    return found


def test_every_docs_page_and_section_the_code_cites_exists():
    cited = citations()
    assert len(cited) > 30  # the scan found the code's citations at all
    problems = []
    for where, page, section in cited:
        path = ROOT / page
        if not path.is_file():
            problems.append(f"{where}: {page} does not exist")
        elif section is not None:
            wanted = " ".join(section.replace("`", "").split()).lower()
            if wanted not in {" ".join(text.split()).lower() for text in heading_texts(path)}:
                problems.append(f"{where}: {page} has no section {section!r}")
    assert problems == []


def test_the_code_cites_the_docs_not_the_readme():
    """The README is the newcomer's page and changes shape; the code cites the docs pages, which keep the text."""
    offenders = [f"{source.relative_to(ROOT)}:{number}"
                 for source in sorted((ROOT / "queuectl").rglob("*.py"))
                 for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1)
                 if "README" in line]
    assert offenders == []


def test_every_docs_page_is_in_the_site_nav():
    nav = set(re.findall(r"[\w./-]+\.md", (ROOT / "mkdocs.yml").read_text(encoding="utf-8")))
    pages = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}
    assert pages - nav == set()
    assert nav - pages == set()


@pytest.mark.parametrize("name", ["README.md", "bench/RESULTS.md"])
def test_the_front_pages_stay_short(name):
    assert len((ROOT / name).read_text(encoding="utf-8").splitlines()) <= 250


def test_slugs_follow_both_hosts():
    assert github_slug("Checking a spool: queuectl doctor") == "checking-a-spool-queuectl-doctor"
    assert mkdocs_slug("Checking a spool: queuectl doctor") == "checking-a-spool-queuectl-doctor"
    assert github_slug("A – B") == "a--b" and mkdocs_slug("A – B") == "a-b"
