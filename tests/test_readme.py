"""The README's contents list is its headings, in order, and every entry leads to one."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every ``##`` and ``###`` heading outside fenced code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [(len(m.group(1)), m.group(2).strip())
            for m in re.finditer(r"^(#{2,3}) (.+)$", text, re.M)]


def test_contents_list_every_section_in_order_and_each_link_leads_to_one():
    text = README.read_text()
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^( *)- \[(.+?)\]\(#([^)]+)\)$", contents, re.M)
    listed = [(2 + len(indent) // 2, title) for indent, title, _ in entries]
    assert listed == [h for h in headings(text) if h[1] != "Contents"]
    anchors = {slug(title) for _, title in headings(text)}
    assert all(anchor == slug(title) and anchor in anchors for _, title, anchor in entries)


def test_slug_drops_punctuation_as_github_does():
    assert slug("After scoring: query and look") == "after-scoring-query-and-look"
    assert slug("Catalogues in astronomers' conventions") == "catalogues-in-astronomers-conventions"
