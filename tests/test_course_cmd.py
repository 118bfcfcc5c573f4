"""`lemmse course`: one real short chapter executed end to end (CI's smoke of the command), a
failing chapter reported with exit code 1, bad flags as one-line errors, and the chapter sources
(and a learner's saved notebooks) left untouched."""

import hashlib
import re
import textwrap

import nbformat
import pytest

from lemmse_lite.cli import main
from lemmse_lite.course import find_course_dir, myst_to_markdown

CHAPTER = "00_inverse_problems"


def _digest(folder):
    """The chapter run and its paired notebook (a learner's saved outputs), if any."""
    files = [folder / f"{CHAPTER}.md", folder / f"{CHAPTER}.ipynb"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in files}


def _figure_outputs(nb):
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


def test_course_one_chapter(tmp_path, capsys):
    course = find_course_dir()
    before = _digest(course)
    out = tmp_path / "site"
    assert main(["course", "--profile", "quick", "--only", "00", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"{CHAPTER}\s+\d+\.\d s\s+ok", printed), printed
    assert str(out / "index.html") in printed

    nb = nbformat.read(out / f"{CHAPTER}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)       # every code cell ran
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert _figure_outputs(nb) >= 1                             # inline figures, not Agg

    html = (out / f"{CHAPTER}.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= _figure_outputs(nb)
    assert '<script src="_mathjax/MathJax.js?config=' in html
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
