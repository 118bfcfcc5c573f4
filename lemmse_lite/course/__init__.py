"""lemmse course: run the whole course headless and keep what it produced.

Every chapter ``course/NN_*.md`` (jupytext MyST notebooks) is converted in memory, executed in
order in a fresh Python kernel (nbclient) under the chosen profile, and written to ``--out`` as

- ``NN_name.ipynb``: the executed notebook with its outputs (figures, tables, printed results);
- ``NN_name.html``: one self-contained page (figures embedded) that reads as the book: the book's
  offline content build (mystmd, :mod:`lemmse_lite.course.pages`) numbers equations, figures,
  exercises and theorems, resolves references and citations (a bibliography per page) and links
  glossary terms to ``glossary.html``; MathJax renders the mathematics from a local copy in
  ``_mathjax/`` (the one the ``jupyter-server-mathjax`` package ships), so the pages open offline;
- ``index.html``: the chapters in order, with their status and run time, linking the pages.

Without mystmd (``jupyter-book`` not installed, or no Node.js) the pages fall back to nbconvert's
rendering of the notebooks, with the MyST markup made plain (:func:`myst_to_markdown`).

The chapter sources in ``course/`` are only read: a learner's saved notebooks are never touched.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

import jupyter_server_mathjax
import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter
from tqdm.auto import tqdm

from ..errors import UsageError
from ..profiles import get_profile
from . import pages as book
from . import pdf as printer

__all__ = ["ChapterRun", "find_course_dir", "render_course", "run_course", "select_chapters", "write_index"]

#: The MathJax 2 configuration the pages load (shipped in jupyter-server-mathjax's static/config).
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
#: The matplotlib backend of the kernels: figures become outputs even when the caller's
#: environment says ``MPLBACKEND=Agg`` (as the test command does).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@dataclass
class ChapterRun:
    """One executed chapter: where its outputs are, how long it took, and how it ended."""

    name: str
    title: str
    notebook: Path
    html: Path
    seconds: float
    error: str | None = None


def find_course_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of the chapters: ``path``, else ``./course``, else the ``course/`` beside the
    package (an editable install of the repository). :class:`UsageError` (naming ``--course-dir``)
    if it holds no chapter."""
    candidates = [Path(path)] if path is not None else [
        Path.cwd() / "course", Path(__file__).resolve().parents[2] / "course"]
    for folder in candidates:
        if sorted(folder.glob("[0-9][0-9]_*.md")):
            return folder
    where = " or ".join(str(c) for c in candidates)
    raise UsageError(f"--course-dir: no chapter NN_*.md found in {where}")


def select_chapters(folder: Path, only: list[str] | None = None) -> list[Path]:
    """The chapters of ``folder`` in order; ``only`` keeps those whose number (``01``) or name
    (``01_ideal_mmse``) is listed. :class:`UsageError` naming ``--only`` for a name that matches nothing."""
    chapters = sorted(folder.glob("[0-9][0-9]_*.md"))
    if not only:
        return chapters
    picked = []
    for key in only:
        hits = [c for c in chapters if key in (c.stem, c.stem[:2], c.name)]
        if not hits:
            names = ", ".join(c.stem for c in chapters)
            raise UsageError(f"--only: no chapter {key!r} (expected a number or a name among {names})")
        picked += [c for c in hits if c not in picked]
    return sorted(picked)


def _title(nb, fallback: str) -> str:
    """The chapter's first level-1 heading, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def copy_mathjax(out: Path) -> str:
    """Copy the MathJax of jupyter-server-mathjax into ``out/_mathjax`` (once); returns the
    relative URL the pages load it from."""
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = out / "_mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True)
    return f"_mathjax/MathJax.js?config={MATHJAX_CONFIG}"


#: MyST syntax that plain-markdown HTML would show raw, and its plain form (pattern, replacement).
MYST_TO_MARKDOWN = [
    (r"^\([\w:-]+\)=[ \t]*$", ""),                                       # (label)= targets
    (r"^\$\$[ \t]*\([\w:-]+\)[ \t]*$", "$$"),                             # $$ (eq-label)
    (r"^```\{(\w+)-start\}[^\n]*\n(?::[^\n]*\n)*```[ \t]*$", lambda m: f"**{m[1].title()}.**"),
    (r"^```\{\w+-end\}[^\n]*\n(?::[^\n]*\n)*```[ \t]*$", ""),
    (r"^:::+\{(?:\w+:)?([\w-]+)\}[ \t]*(.*)$", lambda m: f"**{m[1].title()}.** {m[2]}".rstrip()),
    (r"^:::+[ \t]*$", ""),                                                # directive ends
    (r"^:(?:label|class|nonumber|enumerated|open):[^\n]*$", ""),          # directive options
    (r"\{cite:[tp]\}`([^`]+)`", r"[\1]"),
    (r"\{\w+:ref\}`([^`]+)`", r"\1"),
    (r"\[\]\(#([\w:-]+)\)", r"(\1)"),                                      # [](#eq-label)
    (r"\[@([\w:-]+)\]", r"[\1]"),                                           # [@citation]
]


def myst_to_markdown(text: str) -> str:
    """A markdown cell's MyST targets, directives and roles in plain markdown (for the HTML)."""
    for pattern, replacement in MYST_TO_MARKDOWN:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def write_html(nb, path: Path, mathjax_url: str) -> None:
    """One self-contained HTML page of an executed notebook (images embedded, local MathJax),
    its MyST markup made plain markdown (:func:`myst_to_markdown`)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = myst_to_markdown(cell.source)
    exporter = HTMLExporter(template_name="lab", mathjax_url=mathjax_url, embed_images=True,
                            require_js_url="data:,")  # no CDN: the pages load nothing from the web
    body, _ = exporter.from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")


def _kernel_env(profile_name: str) -> dict[str, str]:
    """The kernel's environment: the caller's, with the profile and an inline matplotlib backend."""
    return {**os.environ, "LEMMSE_PROFILE": profile_name, "MPLBACKEND": INLINE_BACKEND}


@dataclass
class Site:
    """What the pages are made from: the local MathJax, the chapters in order (for the links
    between pages) and the book's content build (None: nbconvert's rendering instead)."""

    mathjax_url: str
    stems: list[str]
    pages: dict | None = None


def content_build(chapters: list[Path], quiet: bool = False) -> dict | None:
    """The book's offline content build of ``chapters`` (in a temporary folder: seconds); None,
    with one line on stderr, where mystmd cannot run (no ``jupyter-book`` or Node.js)."""
    with tempfile.TemporaryDirectory(prefix="lemmse-book-") as work:
        try:
            return book.build_content(chapters, Path(work) / "project")
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            if not quiet:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                print(f"lemmse course: no book build ({reason}); the pages show the notebooks "
                      "without numbers or citations", file=sys.stderr)
            return None


def _nav(stems: list[str], stem: str, glossary: bool) -> str:
    """Links to the previous chapter, the index, the glossary and the next chapter."""
    i = stems.index(stem) if stem in stems else -1
    prev = f"<a href='{stems[i - 1]}.html'>← {stems[i - 1][:2]}</a>" if i > 0 else "<span></span>"
    nxt = (f"<a href='{stems[i + 1]}.html'>{stems[i + 1][:2]} →</a>" if 0 <= i < len(stems) - 1
           else "<span></span>")
    middle = "<a href='index.html'>Contents</a>" + (" · <a href='glossary.html'>Glossary</a>" if glossary else "")
    return f"{prev}<span>{middle}</span>{nxt}"


def write_chapter_html(nb, path: Path, site: Site) -> None:
    """A chapter's page: rendered from the book's content build with the outputs of ``nb``,
    else (no build) nbconvert's page of ``nb``."""
    page = book.find_page(site.pages, path.stem) if site.pages else None
    if page is None:
        write_html(nb, path, site.mathjax_url)
        return
    glossary = book.find_page(site.pages, "glossary") is not None
    book.write_page(path, site.pages, page, nb, site.mathjax_url, _nav(site.stems, path.stem, glossary))


def write_glossary(out: Path, site: Site) -> Path | None:
    """``out/glossary.html``, the page the glossary terms of every chapter link to."""
    page = book.find_page(site.pages, "glossary") if site.pages else None
    if page is None:
        return None
    path = out / "glossary.html"
    book.write_page(path, site.pages, page, None, site.mathjax_url, _nav(site.stems, "", True))
    return path


#: The kernel logs only its errors: its own warnings (that it talks over local TCP without
#: encryption, as every local kernel does) are internals that would land among the chapter times.
#: A cell's warnings are outputs, not log lines: they still reach the notebook and the page.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


def execute_chapter(source: Path, out: Path, profile_name: str, site: Site,
                    bar=None, cell_timeout: int | None = None) -> ChapterRun:
    """Execute chapter ``source`` (kernel started in its folder) and write its ``.ipynb`` and
    ``.html`` to ``out``; a failing cell ends the chapter, which is still written with the
    outputs so far and the error."""
    nb = jupytext.read(source)
    run = ChapterRun(source.stem, _title(nb, source.stem), out / f"{source.stem}.ipynb",
                     out / f"{source.stem}.html", 0.0)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", extra_arguments=KERNEL_ARGS,
                            resources={"metadata": {"path": str(source.parent)}})
    if bar is not None:
        bar.set_description(source.stem)
        client.on_cell_executed = lambda **_: bar.update(1)  # called for code cells only
    start = time.perf_counter()
    try:
        client.execute(env=_kernel_env(profile_name))
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:  # the chapter ends here
        run.error = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    run.seconds = time.perf_counter() - start
    nbformat.write(nb, run.notebook)
    write_chapter_html(nb, run.html, site)
    return run


def write_index(out: Path, runs: list[ChapterRun], profile_name: str, mathjax_url: str,
                glossary: bool = False) -> Path:
    """``out/index.html``: the chapters in order with their status, time and links."""
    rows = "\n".join(
        f"<li><a href='{r.html.name}'>{escape(r.name[:2])} · {escape(r.title)}</a> "
        f"(<a href='{r.notebook.name}' download>notebook</a>) — {r.seconds:.0f} s"
        + (f" — <strong>failed</strong>: {escape(r.error)}" if r.error else "") + "</li>"
        for r in runs)
    extra = "<p><a href='glossary.html'>Glossary</a></p>\n" if glossary else ""
    body = (f"<h1>Why CNNs solve inverse problems like the LE-MMSE</h1>\n"
            f"<p>Executed with the <code>{escape(profile_name)}</code> profile. The estimator of "
            f"chapter 04, \\(\\hat x_{{\\mathrm{{LE}}}}\\), is a softmax-weighted mosaic of "
            f"training-patch centres.</p>\n<ul class='toc'>\n{rows}\n</ul>\n{extra}")
    path = out / "index.html"
    path.write_text(book.html_document("The LE-MMSE course", body, mathjax_url), encoding="utf-8")
    return path


def prepare_site(out: Path, chapters: list[Path], quiet: bool = False) -> Site:
    """``out`` with its local MathJax, and the book's content build of ``chapters``."""
    out.mkdir(parents=True, exist_ok=True)
    site = Site(copy_mathjax(out), [c.stem for c in chapters], content_build(chapters, quiet))
    write_glossary(out, site)
    return site


def _chapter_title(site: Site, run: ChapterRun) -> str:
    page = book.find_page(site.pages, run.name) if site.pages else None
    return page.title if page is not None else run.title


def run_course(out: str | os.PathLike = "lemmse_out/course", profile: str | None = None,
               only: list[str] | None = None, course_dir: str | os.PathLike | None = None,
               quiet: bool = False, cell_timeout: int | None = None) -> list[ChapterRun]:
    """Execute the chapters in order (a progress bar over their code cells) into ``out``;
    returns one :class:`ChapterRun` per chapter. ``profile`` None reads ``$LEMMSE_PROFILE``."""
    profile_name = get_profile(profile).name
    chapters = select_chapters(find_course_dir(course_dir), only)
    out = Path(out)
    site = prepare_site(out, chapters, quiet)
    n_cells = sum(c.cell_type == "code" for ch in chapters for c in jupytext.read(ch).cells)
    runs = []
    with tqdm(total=n_cells, unit="cell", disable=quiet) as bar:
        for source in chapters:
            runs.append(execute_chapter(source, out, profile_name, site, bar, cell_timeout))
    for run in runs:
        run.title = _chapter_title(site, run)
    write_index(out, runs, profile_name, site.mathjax_url, (out / "glossary.html").is_file())
    return runs


def render_course(out: str | os.PathLike, course_dir: str | os.PathLike | None = None,
                  only: list[str] | None = None) -> list[Path]:
    """The pages of the chapters without running them (code cells without outputs): what the
    prose looks like, in seconds (the browser test reads them). Returns the pages written."""
    chapters = select_chapters(find_course_dir(course_dir), only)
    out = Path(out)
    site = prepare_site(out, chapters)
    paths = []
    for source in chapters:
        paths.append(out / f"{source.stem}.html")
        write_chapter_html(jupytext.read(source), paths[-1], site)
    return paths


#: The title of the PDF's cover.
BOOK_TITLE = "Why CNNs solve inverse problems like the LE-MMSE"


def write_pdf(out: Path, runs: list[ChapterRun], site: Site) -> tuple[Path, int]:
    """``out/course.pdf``: every chapter run (with its outputs), numbered, with a table of
    contents, a bibliography per chapter and the glossary, printed offline; (path, pages). The
    document it prints stays beside it (``course_book.html``)."""
    if site.pages is None:
        raise UsageError("--pdf: the book's content build is needed (pip install jupyter-book; Node.js)")
    notebooks = {r.name: nbformat.read(r.notebook, as_version=4) for r in runs}
    stems = [r.name for r in runs] + ["glossary"]
    html = out / "course_book.html"
    body = book.book_body(site.pages, stems, notebooks, BOOK_TITLE)
    html.write_text(book.html_document(BOOK_TITLE, body, site.mathjax_url), encoding="utf-8")
    path = out / "course.pdf"
    return path, printer.print_pdf(html, path)


def cmd_course(args) -> int:
    """``lemmse course``: run the chapters, print each one's time and where everything is (with
    ``--pdf``, the course as one PDF too); exit code 1 if a chapter failed."""
    if args.cell_timeout is not None and args.cell_timeout <= 0:
        raise UsageError(f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout}")
    pdf = getattr(args, "pdf", False)
    if pdf and not printer.browser_available():  # before hours of chapters, not after
        raise UsageError("--pdf: no Chromium to print with (apt-get install chromium, or playwright "
                         "install chromium)")
    runs = run_course(args.out, args.profile, args.only, args.course_dir, args.quiet, args.cell_timeout)
    width = max(len(r.name) for r in runs)
    for r in runs:
        status = f"FAILED: {r.error}" if r.error else "ok"
        print(f"{r.name:<{width}}  {r.seconds:7.1f} s  {status}  {r.html}")
    print(f"total {sum(r.seconds for r in runs):.1f} s; open {Path(args.out) / 'index.html'}")
    if pdf:
        start = time.perf_counter()
        site = prepare_site(Path(args.out), [find_course_dir(args.course_dir) / f"{r.name}.md" for r in runs],
                            args.quiet)
        path, n_pages = write_pdf(Path(args.out), runs, site)
        print(f"{path}: {n_pages} pages in {time.perf_counter() - start:.0f} s")
    return 1 if any(r.error for r in runs) else 0
