"""The manual stays a manual: a short README, every script, config and env id documented on
exactly one reference page, no issue numbers in pages or code, links that resolve.

Fast and without MkDocs (``make docs`` builds the site with ``mkdocs build --strict``, which
checks the site's own links); this reads the files only.
"""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import pytest

from drive_attention import envs  # noqa: F401  registers the ids

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250  # the front door; the rest lives in docs/
NAMESPACE = "DriveAttention/"  # the project's Gymnasium ids
CODE_FOLDERS = ("agent", "envs", "models", "scripts", "tests")

ISSUE = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)
"""An issue number: the word issue (or issues), then a number, with or without ``#``. History
belongs in the changelog as a topic, never as a number."""
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
"""A markdown link or image; group 1 is its target."""
DOC_PAGE = re.compile(r"\b(docs/[\w./-]+\.md)\b")
"""A doc page named in code or a config (``docs/carla.md``)."""
ENV_ID = re.compile(r"`(" + re.escape(NAMESPACE) + r"[A-Za-z0-9]+-v\d+)`")


# ------------------------------------------------------------------------------------ helpers
def is_generated(page: Path) -> bool:
    """Pages written by scripts (the study's ``docs/results/<name>/results.md``, the sweeps'
    ``docs/sweeps/``), which these rules do not govern."""
    parts = page.relative_to(DOCS).parts
    return parts[0] == "sweeps" or (
        parts[0] == "results" and len(parts) == 3 and parts[2] == "results.md"
    )


def manual_pages() -> list[Path]:
    """Every hand-written markdown page under docs/."""
    return sorted(p for p in DOCS.rglob("*.md") if not is_generated(p))


def python_files() -> list[Path]:
    return sorted(p for folder in CODE_FOLDERS for p in (ROOT / folder).rglob("*.py"))


def issue_mentions(text: str) -> list[str]:
    """``line N: text`` for every line naming an issue number (also across a line break)."""
    return [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
        for m in ISSUE.finditer(text)
    ]


def table_rows(text: str) -> list[str]:
    """The rows of the markdown tables in ``text`` (header and separator rows included)."""
    return [line for line in text.splitlines() if line.lstrip().startswith("|")]


def ids_in_tables(text: str) -> set[str]:
    """The env ids (in backticks) that a table row of ``text`` documents."""
    return {m.group(1) for row in table_rows(text) for m in ENV_ID.finditer(row)}


def relative_links(text: str) -> list[str]:
    """Link and image targets of ``text`` that point into the repository (no scheme, not a pure
    anchor), without their anchor."""
    targets = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0].split("?", 1)[0])
    return targets


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or folder does not exist."""
    text = page.read_text(encoding="utf-8")
    return [t for t in relative_links(text) if not (page.parent / t).exists()]


def registered_ids() -> list[str]:
    return sorted(i for i in gym.registry if i.startswith(NAMESPACE))


# ------------------------------------------------------------------------------------- checks
def test_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    n = len(text.splitlines())
    assert n < README_MAX_LINES, (
        f"README.md has {n} lines (at most {README_MAX_LINES - 1}): move the detail to a page "
        "under docs/ and link it"
    )
    for command in ("make train", "make test"):
        assert command in text, f"README.md must show the command `{command}`"


REFERENCES = {  # reference page: (folder, glob, the pattern of a name in backticks)
    "scripts.md": ("scripts", "*.py", r"`(scripts/[\w.-]+\.py)`"),
    "configs.md": ("configs", "**/*.y*ml", r"`(configs/[\w./-]+\.ya?ml)`"),
}


@pytest.mark.parametrize("page_name", sorted(REFERENCES))
def test_every_script_and_config_is_in_its_reference(page_name: str):
    folder, pattern, name = REFERENCES[page_name]
    text = (DOCS / "reference" / page_name).read_text(encoding="utf-8")
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / folder).glob(pattern))
    assert files, f"no {pattern} found under {folder}/"
    missing = [f for f in files if f"`{f}`" not in text]
    assert not missing, f"not in docs/reference/{page_name} (add a row each): {missing}"
    stale = sorted(set(re.findall(name, text)) - set(files))
    assert not stale, f"docs/reference/{page_name} names files that do not exist: {stale}"


def test_each_script_and_config_has_its_row_on_one_page_only():
    """Other pages show scripts and configs in use and link the reference; only the reference
    documents each one (a table row that starts with its path)."""
    files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "scripts").glob("*.py")]
    files += [p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.y*ml")]
    texts = {page: page.read_text(encoding="utf-8") for page in manual_pages()}
    twice = {}
    for name in files:
        row = re.compile(r"^\|\s*`" + re.escape(name) + r"`\s*\|", re.MULTILINE)
        pages = [page.relative_to(ROOT).as_posix() for page, t in texts.items() if row.search(t)]
        if len(pages) != 1:
            twice[name] = pages
    assert not twice, f"documented on other than exactly one page (its reference row): {twice}"


def test_every_env_id_is_documented_on_exactly_one_scenario_page():
    ids = registered_ids()
    assert ids, f"import envs registered no id under {NAMESPACE}"
    pages = sorted((DOCS / "scenarios").glob("*.md"))
    assert pages, "no pages under docs/scenarios/"
    documented = {
        p.relative_to(DOCS).as_posix(): ids_in_tables(p.read_text("utf-8")) for p in pages
    }
    for env_id in ids:
        where = [page for page, found in documented.items() if env_id in found]
        assert len(where) == 1, (
            f"{env_id} is in a table row of {len(where)} pages of docs/scenarios/ ({where}); "
            "document it in exactly one (the table of scenarios/index.md)"
        )
    unknown = sorted(set().union(*documented.values()) - set(ids))
    assert not unknown, (
        f"docs/scenarios/ documents ids that import envs does not register: {unknown}"
    )


def test_no_page_names_an_issue_number():
    pages = [README, *manual_pages()]
    assert len(pages) > 10, "the manual's pages were not found under docs/"
    found = {p.relative_to(ROOT).as_posix(): issue_mentions(p.read_text("utf-8")) for p in pages}
    found = {page: hits for page, hits in found.items() if hits}
    assert not found, f"name the topic, not the issue (history goes to docs/changelog.md): {found}"


def test_no_code_names_an_issue_number():
    files = python_files()
    assert files, "no Python files found"
    found = {p.relative_to(ROOT).as_posix(): issue_mentions(p.read_text("utf-8")) for p in files}
    found = {path: hits for path, hits in found.items() if hits}
    assert not found, f"name the topic or the doc page, not the issue: {found}"


def test_every_doc_page_the_code_names_exists():
    files = [*python_files(), *sorted((ROOT / "configs").rglob("*.yaml"))]
    named = {
        (p.relative_to(ROOT).as_posix(), page)
        for p in files
        for page in DOC_PAGE.findall(p.read_text("utf-8"))
    }
    assert named, "no code or config points to a page under docs/"
    missing = sorted((path, page) for path, page in named if not (ROOT / page).is_file())
    assert not missing, f"code points to doc pages that do not exist (file, page): {missing}"


def test_every_relative_link_of_the_readme_resolves():
    links = relative_links(README.read_text(encoding="utf-8"))
    assert len(links) >= 5, "README.md links to the manual's pages; none were found"
    broken = broken_links(README)
    assert not broken, f"README.md links to files that do not exist: {broken}"


@pytest.mark.parametrize("page", manual_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_relative_link_of_a_page_resolves(page: Path):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)} links to files that do not exist: {broken}"


# ---------------------------------------------------- the checks catch what they look for
def test_the_checks_catch_what_they_look_for(tmp_path: Path):
    # built from pieces, so that this file does not name an issue itself
    number, hashed = "issue " + "17", "Issue #" + "7"
    assert issue_mentions(f"ok\nsee {number} and {hashed}\n") == [
        f"line 2: {number!r}",
        f"line 2: {hashed!r}",
    ]
    assert issue_mentions("a tissue 3 times; the issues list") == []
    assert ids_in_tables(f"| `{NAMESPACE}Merge-v0` | x |\nprose `{NAMESPACE}Highway-v0`") == {
        f"{NAMESPACE}Merge-v0"
    }
    (tmp_path / "here.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text(
        "[a](here.md) [b](gone.md#part) ![c](img/none.png) [d](https://x.org/y) [e](#top)"
    )
    assert relative_links(page.read_text()) == ["here.md", "gone.md", "img/none.png"]
    assert broken_links(page) == ["gone.md", "img/none.png"]
