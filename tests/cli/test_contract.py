"""The external contract is in the repository (``lensscan/assets/docs/contract.md``, shipped with
the package): the README links to it, it says what the workspace's ``../shared/DESIGN.md`` says,
and every command and option it shows is one the CLI has."""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path

import pytest

from lensscan.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "lensscan/assets/docs/contract.md"
SHARED = ROOT.parent / "shared" / "DESIGN.md"


def _contract() -> str:
    return (resources.files("lensscan") / "assets" / "docs" / "contract.md").read_text()


def _sections(text: str) -> dict[str, list[str]]:
    """``## heading`` -> the section's lines (trailing spaces and blank lines dropped); the
    title's own paragraph (before the first ``##``) is left out: it introduces the page."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = []
        elif current is not None and line.strip():
            out[current].append(line.rstrip())
    return out


def _code_lines(text: str) -> list[str]:
    """The lines of the page's fenced code blocks."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    return [line for block in blocks for line in block.splitlines()]


def test_readme_links_to_the_contract_in_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../shared/" not in readme  # a clone has no such folder
    links = re.findall(r"\]\(([^)#\s]+\.md)\)", readme)
    assert CONTRACT in links
    assert all((ROOT / link).is_file() for link in links), links
    assert (ROOT / CONTRACT).read_text() == _contract()  # the file the package ships


@pytest.mark.skipif(not SHARED.is_file(), reason="no ../shared/DESIGN.md beside this checkout")
def test_contract_says_what_the_shared_design_says():
    ours, shared = _sections(_contract()), _sections(SHARED.read_text())
    assert _contract().splitlines()[0] == SHARED.read_text().splitlines()[0]  # the title
    assert list(ours) == list(shared), "the sections differ"
    for heading, lines in shared.items():
        diff = "\n".join(difflib.unified_diff(lines, ours[heading], "DESIGN.md", CONTRACT,
                                              lineterm=""))
        assert ours[heading] == lines, f"section {heading!r} differs:\n{diff}"


def test_contract_commands_and_options_exist(capsys):
    """Every ``lensscan CMD ... --option`` line of the contract's command blocks."""
    shown: dict[str, set[str]] = {}
    for line in _code_lines(_contract()):
        words = line.split("#")[0].split()
        if len(words) > 1 and words[0] == "lensscan":
            shown.setdefault(words[1], set()).update(re.findall(r"--[a-z][a-z0-9-]*", line))
    assert {"score", "query", "gallery", "cutout", "inject"} <= set(shown)
    for cmd, options in shown.items():
        with pytest.raises(SystemExit) as done:
            main([cmd, "--help"])
        assert done.value.code == 0, cmd
        text = capsys.readouterr().out
        assert all(opt in text for opt in options), (cmd, options - set(text.split()))
