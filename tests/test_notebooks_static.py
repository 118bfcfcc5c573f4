"""Static checks of the course notebooks (course/*.md) and of the book's configuration.

These read the text only — nothing is executed (nbval runs the notebooks; see the README). They
enforce the conventions of COURSE_STYLE.md that a broken notebook would not reveal at run time:
front matter, page label, section order, asserts, figure labels, exercises, citations, and a
table of contents that lists every chapter.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"
BOOK = ROOT / "book"
CHAPTERS = sorted(COURSE.glob("[0-9][0-9]_*.md"))

CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.S | re.M)
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _headings(text: str) -> list[str]:
    # headings outside code cells
    stripped = CODE_CELL.sub("", text)
    return [m.group(1).strip() for m in re.finditer(r"^##\s+(.+)$", stripped, re.M)]


def _code(text: str) -> list[str]:
    return [m.group(1) for m in CODE_CELL.finditer(text)]


def test_chapters_exist_in_order():
    numbers = [int(p.name[:2]) for p in CHAPTERS]
    assert numbers == list(range(len(CHAPTERS))) and len(CHAPTERS) >= 6, [p.name for p in CHAPTERS]


@pytest.fixture(params=CHAPTERS, ids=lambda p: p.name)
def chapter(request):
    return request.param


def test_front_matter(chapter):
    m = FRONT_MATTER.match(_text(chapter))
    assert m, "missing YAML front matter"
    fm = m.group(1)
    assert re.search(r"^jupytext:\s*$", fm, re.M)
    assert re.search(r"^\s+format_name:\s*myst\s*$", fm, re.M)
    assert re.search(r"^kernelspec:\s*$", fm, re.M)
    assert re.search(r"^\s+name:\s*python3\s*$", fm, re.M)
    assert re.search(r"^\s+language:\s*python\s*$", fm, re.M)


def test_label_then_title(chapter):
    body = FRONT_MATTER.sub("", _text(chapter)).lstrip("\n")
    lines = body.splitlines()
    assert re.fullmatch(r"\(ch-[a-z0-9-]+\)=", lines[0]), f"first line must be a page label, got {lines[0]!r}"
    assert lines[1].startswith("# "), "the page label must be followed by the # Title"


def test_sections_in_order(chapter):
    heads = _headings(_text(chapter))
    assert heads[0] == "Learning goals", heads
    assert "Summary" in heads and "Exercises" in heads, heads
    assert heads.index("Summary") < heads.index("Exercises") == len(heads) - 1, heads


def test_every_chapter_asserts_its_claims(chapter):
    code = "\n".join(_code(_text(chapter)))
    assert len(re.findall(r"^\s*assert\b", code, re.M)) >= 2, "claims must be checked with assert"


def test_settings_come_from_the_profile(chapter):
    code = _code(_text(chapter))
    assert any("profiles.get_profile()" in c for c in code)
    setup = "\n".join(code)
    assert "manual_seed" in setup, "fix the seeds"
    # no hard-coded dataset names or training-set sizes in data.load calls
    for call in re.findall(r"data\.load\(([^)]*)\)", setup):
        assert call.split(",")[0].strip().startswith("prof."), f"dataset must come from the profile: {call}"


def test_figures_are_labelled(chapter):
    """Every labelled figure cell also has a caption. Options may be written ``:label: x`` or as
    the YAML block (``---`` … ``---``) that jupytext writes when JupyterLab saves the notebook."""
    text = _text(chapter)
    figures = 0
    for m in re.finditer(r"^```\{code-cell\}[^\n]*\n((?::[^\n]*\n)+|---\n.*?\n---\n)", text, re.S | re.M):
        opts = m.group(1)
        if re.search(r"^:?label:\s*fig-", opts, re.M):
            figures += 1
            assert re.search(r"^:?caption:\s*\S", opts, re.M), opts
    assert figures >= 1, "at least one labelled figure"
    labels = re.findall(r"^:?label:\s*(fig-\S+)", text, re.M)
    assert len(set(labels)) == len(labels)


def test_exercises_have_solutions(chapter):
    text = _text(chapter)
    exercises = re.findall(r"^(?::::|```)\{exercise(?:-start)?\}[^\n]*\n:label:\s*(\S+)", text, re.M)
    solutions = re.findall(r"^(?::::|```)\{solution(?:-start)?\}\s+(\S+)", text, re.M)
    assert exercises, "at least one exercise"
    assert sorted(exercises) == sorted(solutions), (exercises, solutions)
    assert text.count("{exercise-start}") == text.count("{exercise-end}")
    assert text.count("{solution-start}") == text.count("{solution-end}")


def test_no_jupyter_book_1_features(chapter):
    text = _text(chapter)
    for feature in ("mystnb:", "{glue", "glue(", "_config.yml"):
        assert feature not in text, feature


def test_cites_the_paper(chapter):
    assert "nguyen2026analytic" in _text(chapter)


def test_citations_resolve():
    bib = _text(BOOK / "references.bib")
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert "nguyen2026analytic" in keys
    for path in [*CHAPTERS, BOOK / "intro.md"]:
        text = _text(path)
        cited = set(re.findall(r"@([A-Za-z][\w-]*\d{4}[a-z]*)", text))
        cited |= set(re.findall(r"\{cite:[tp]\}`([^`]+)`", text))
        assert cited <= keys, (path.name, cited - keys)


def test_toc_lists_every_chapter():
    toc = _text(BOOK / "myst.yml")
    for path in CHAPTERS:
        assert re.search(rf"file: (\.\./)?course/{re.escape(path.name)}\b", toc), path.name
    assert "references.bib" in toc and "*.ipynb" in toc


def test_cross_references_resolve():
    labels = set()
    texts = {p: _text(p) for p in [*CHAPTERS, BOOK / "intro.md"]}
    for text in texts.values():
        labels |= set(re.findall(r"^\(([\w-]+)\)=", text, re.M))
        labels |= set(re.findall(r"^:?label:\s*(\S+)", text, re.M))
        labels |= set(re.findall(r"\$\$\s*\((eq-[\w-]+)\)", text))
    for path, text in texts.items():
        refs = set(re.findall(r"\]\(#([\w-]+)\)", text)) | set(re.findall(r"\{prf:ref\}`([\w-]+)`", text))
        assert refs <= labels, (path.name, refs - labels)


def test_jupytext_reads_and_round_trips(chapter):
    """CI converts the chapters with jupytext; JupyterLab saves them back through jupytext. Both
    must work, and saving must not rewrite the file (e.g. a long or ':'-containing caption makes
    jupytext switch to a YAML option block, whose list-valued tags mystmd then rejects)."""
    jupytext = pytest.importorskip("jupytext")
    from jupytext.config import load_jupytext_configuration_file

    config = load_jupytext_configuration_file(str(ROOT / "jupytext.toml"))  # as JupyterLab and CI read it
    text = _text(chapter)
    nb = jupytext.reads(text, fmt="md:myst", config=config)
    assert any(c.cell_type == "code" for c in nb.cells)
    # the jupytext_version line records the writer's version, not the chapter's content
    same = re.compile(r"^(\s*jupytext_version:).*$", re.M)
    written = jupytext.writes(nb, fmt="md:myst", config=config)
    assert same.sub(r"\1", written) == same.sub(r"\1", text)
