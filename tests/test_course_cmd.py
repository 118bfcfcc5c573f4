"""`lemmse course`: one real short chapter executed end to end (CI's smoke of the command), a
failing chapter reported with exit code 1, bad flags as one-line errors, and the chapter sources
(and a learner's saved notebooks) left untouched; the pages read as the book (numbers, references
across chapters, citations with a bibliography, glossary links, closed answers), and without the
book's build they fall back to plain pages."""

import hashlib
import re
import textwrap

import nbformat
import pytest

from lemmse_lite.cli import main
from lemmse_lite.course import find_course_dir, myst_to_markdown, render_course
from lemmse_lite.course import pages as book

CHAPTER = "00_inverse_problems"


def _digest(folder):
    """The chapter run and its paired notebook (a learner's saved outputs), if any."""
    files = [folder / f"{CHAPTER}.md", folder / f"{CHAPTER}.ipynb"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in files}


def _figure_outputs(nb):
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


def test_course_one_chapter(tmp_path, capfd):
    course = find_course_dir()
    before = _digest(course)
    out = tmp_path / "site"
    assert main(["course", "--profile", "quick", "--only", "00", "--out", str(out), "--quiet"]) == 0
    printed, errors = capfd.readouterr()                        # the kernel's output too
    assert re.search(rf"{CHAPTER}\s+\d+\.\d s\s+ok", printed), printed
    assert str(out / "index.html") in printed
    assert "encryption" not in printed + errors and "WARNING" not in printed + errors

    nb = nbformat.read(out / f"{CHAPTER}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)       # every code cell ran
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert _figure_outputs(nb) >= 1                             # inline figures, not Agg

    html = (out / f"{CHAPTER}.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= _figure_outputs(nb)
    assert re.search(r"<script src=[\"']_mathjax/MathJax.js\?config=", html)
    assert "<span class='eqno'>(0.1)</span>" in html and "class='bibliography'" in html
    assert "{term}" not in html and "(ch-" not in html             # the book's rendering, not raw MyST
    assert not re.search(r"<script[^>]+src=\"https?://", html)   # nothing fetched from the web
    assert (out / "_mathjax" / "MathJax.js").is_file()
    index = (out / "index.html").read_text(encoding="utf-8")
    assert f"href='{CHAPTER}.html'" in index and f"href='{CHAPTER}.ipynb'" in index
    assert _digest(course) == before                            # sources and saved notebooks untouched


def test_course_failing_chapter(tmp_path, capsys):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_fails.md").write_text(textwrap.dedent("""\
        ---
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---
        # A chapter that fails

        $x = 1$

        ```{code-cell} ipython3
        print("first cell ran")
        ```

        ```{code-cell} ipython3
        raise RuntimeError("deliberate")
        ```
        """))
    out = tmp_path / "site"
    rc = main(["course", "--profile", "quick", "--course-dir", str(chapters), "--out", str(out), "--quiet"])
    assert rc == 1
    assert "FAILED" in capsys.readouterr().out
    nb = nbformat.read(out / "01_fails.ipynb", as_version=4)
    assert nb.cells[1].outputs[0].text.strip() == "first cell ran"   # outputs so far are kept
    assert "failed" in (out / "index.html").read_text(encoding="utf-8")


def test_course_cell_timeout(tmp_path, capsys):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_slow.md").write_text(
        "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n"
        "# Slow\n\n```{code-cell} ipython3\nimport time\ntime.sleep(60)\n```\n")
    rc = main(["course", "--profile", "quick", "--course-dir", str(chapters), "--out", str(tmp_path / "s"),
               "--cell-timeout", "3", "--quiet"])
    assert rc == 1 and "FAILED" in capsys.readouterr().out    # reported, not a traceback


@pytest.mark.parametrize("argv, flag", [
    (["--only", "99"], "--only"),
    (["--course-dir", "/nonexistent"], "--course-dir"),
    (["--cell-timeout", "0"], "--cell-timeout"),
    (["--profile", "huge"], "--profile"),
])
def test_course_bad_flags(argv, flag, tmp_path, capsys):
    assert main(["course", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1


def test_course_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the flag checks make a one-line usage error: a ValueError from inside the run is a bug
    of ours and reaches the caller as it is (it used to be printed as a bad flag, exit 2)."""
    from lemmse_lite import course

    def broken(*args, **kwargs):
        raise ValueError("an internal bug, not a flag")

    monkeypatch.setattr(course, "run_course", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["course", "--profile", "quick", "--only", "00", "--out", str(tmp_path), "--quiet"])


def test_myst_markup_made_plain():
    text = textwrap.dedent("""\
        (ch-x)=
        # Title
        See [](#eq-a) and {cite:t}`nguyen2026analytic` [@nguyen2026analytic], {prf:ref}`thm-a`.

        $$
        a = b
        $$ (eq-a)

        :::{proof:theorem} The MMSE is the posterior mean
        :label: thm-a
        Body $x$.
        :::

        ```{exercise-start}
        :label: ex-a
        ```
        Do it.
        ```{exercise-end}
        ```
        """)
    expected = ("# Title See (eq-a) and [nguyen2026analytic] [nguyen2026analytic], thm-a. $$ a = b $$ "
                "**Theorem.** The MMSE is the posterior mean Body $x$. **Exercise.** Do it.")
    assert myst_to_markdown(text).split() == expected.split(" ")


def test_pages_read_as_the_book(tmp_path):
    """Chapters 04 and 05 rendered from the book's content build (not executed: seconds)."""
    out = tmp_path / "site"
    render_course(out, only=["04", "05"])
    html = (out / "05_closed_form.html").read_text(encoding="utf-8")
    assert "<a href='04_locality.html'>Chapter 04</a>" in html              # across chapters
    assert re.search(r"href='04_locality.html#eq-lemmse'>eq. \(4.4\)</a>", html)
    assert "<span class='eqno'>(5.1)</span>" in html                         # numbered equations
    assert re.search(r"href='#eq-[\w-]+'>\(5\.\d\)</a>", html)              # and references to them
    assert "Nguyen <em>et al.</em> (2026)" in html                          # author-year citations
    assert "<section class='bibliography'><h2>References</h2>" in html
    assert "Nguyen, M. H., Do, Q. B., Pauwels, E., &" in html                 # its entry
    assert re.search(r"href='glossary.html#term-[\w-]+'", html)               # glossary terms
    assert "id='term-degenerate-gaussian'" in (out / "glossary.html").read_text(encoding="utf-8")
    assert "<strong>Exercise 5.1</strong>" in html and "<aside class='admonition tip'" in html
    assert html.count("<details class='solution'") >= 4 and "<details class='solution' open" not in html
    for raw in ("{term}", "{cite", "(ch-", "[@", ":::", "{prf:", "](#", "{exercise"):
        assert raw not in html, raw


def test_pages_without_the_book_build(tmp_path, monkeypatch, capsys):
    """No mystmd (no jupyter-book or Node.js): one line on stderr, then nbconvert's pages."""
    def unavailable(*args, **kwargs):
        raise FileNotFoundError("jupyter: not found")

    monkeypatch.setattr(book, "build_content", unavailable)
    (path,) = render_course(tmp_path / "site", only=["00"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "jupyter: not found" in err
    assert "jp-Notebook" in path.read_text(encoding="utf-8")
