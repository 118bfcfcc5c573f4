"""lemmse course: run the whole course headless and keep what it produced.

Every chapter ``course/NN_*.md`` (jupytext MyST notebooks) is converted in memory, executed in
order in a fresh Python kernel (nbclient) under the chosen profile, and written to ``--out`` as

- ``NN_name.ipynb``: the executed notebook with its outputs (figures, tables, printed results);
- ``NN_name.html``: one self-contained page (figures embedded) whose mathematics MathJax renders
  from a local copy in ``_mathjax/`` (the one the ``jupyter-server-mathjax`` package ships), so
  the pages open offline;
- ``index.html``: the chapters in order, with their status and run time, linking the pages.

The chapter sources in ``course/`` are only read: a learner's saved notebooks are never touched.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
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

from .profiles import get_profile

__all__ = ["ChapterRun", "find_course_dir", "run_course", "select_chapters", "write_index"]

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
    package (an editable install of the repository). ValueError if it holds no chapter."""
    candidates = [Path(path)] if path is not None else [
        Path.cwd() / "course", Path(__file__).resolve().parent.parent / "course"]
    for folder in candidates:
        if sorted(folder.glob("[0-9][0-9]_*.md")):
            return folder
    where = " or ".join(str(c) for c in candidates)
    raise ValueError(f"--course-dir: no chapter NN_*.md found in {where}")


def select_chapters(folder: Path, only: list[str] | None = None) -> list[Path]:
    """The chapters of ``folder`` in order; ``only`` keeps those whose number (``01``) or name
    (``01_ideal_mmse``) is listed. ValueError naming --only for a name that matches nothing."""
    chapters = sorted(folder.glob("[0-9][0-9]_*.md"))
    if not only:
        return chapters
    picked = []
    for key in only:
        hits = [c for c in chapters if key in (c.stem, c.stem[:2], c.name)]
        if not hits:
            names = ", ".join(c.stem for c in chapters)
            raise ValueError(f"--only: no chapter {key!r} (expected a number or a name among {names})")
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


def execute_chapter(source: Path, out: Path, profile_name: str, mathjax_url: str,
                    bar=None, cell_timeout: int | None = None) -> ChapterRun:
    """Execute chapter ``source`` (kernel started in its folder) and write its ``.ipynb`` and
    ``.html`` to ``out``; a failing cell ends the chapter, which is still written with the
    outputs so far and the error."""
    nb = jupytext.read(source)
    run = ChapterRun(source.stem, _title(nb, source.stem), out / f"{source.stem}.ipynb",
                     out / f"{source.stem}.html", 0.0)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
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
    write_html(nb, run.html, mathjax_url)
    return run


def write_index(out: Path, runs: list[ChapterRun], profile_name: str, mathjax_url: str) -> Path:
    """``out/index.html``: the chapters in order with their status, time and links."""
    rows = "\n".join(
        f"<li><a href='{r.html.name}'>{escape(r.title)}</a> "
        f"(<a href='{r.notebook.name}' download>notebook</a>) — {r.seconds:.0f} s"
        + (f" — <strong>failed</strong>: {escape(r.error)}" if r.error else "") + "</li>"
        for r in runs)
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>The LE-MMSE course</title>"
            f"<script src='{mathjax_url}'></script></head><body>\n"
            f"<h1>Why CNNs solve inverse problems like the LE-MMSE</h1>\n"
            f"<p>Executed with the <code>{escape(profile_name)}</code> profile. The estimator of "
            f"chapter 04, \\(\\hat x_{{\\mathrm{{LE}}}}\\), is a softmax-weighted mosaic of "
            f"training-patch centres.</p>\n<ol>\n{rows}\n</ol>\n</body></html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def run_course(out: str | os.PathLike = "lemmse_out/course", profile: str | None = None,
               only: list[str] | None = None, course_dir: str | os.PathLike | None = None,
               quiet: bool = False, cell_timeout: int | None = None) -> list[ChapterRun]:
    """Execute the chapters in order (a progress bar over their code cells) into ``out``;
    returns one :class:`ChapterRun` per chapter. ``profile`` None reads ``$LEMMSE_PROFILE``."""
    profile_name = get_profile(profile).name
    chapters = select_chapters(find_course_dir(course_dir), only)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mathjax_url = copy_mathjax(out)
    n_cells = sum(c.cell_type == "code" for ch in chapters for c in jupytext.read(ch).cells)
    runs = []
    with tqdm(total=n_cells, unit="cell", disable=quiet) as bar:
        for source in chapters:
            runs.append(execute_chapter(source, out, profile_name, mathjax_url, bar, cell_timeout))
    write_index(out, runs, profile_name, mathjax_url)
    return runs


def cmd_course(args) -> int:
    """``lemmse course``: run the chapters, print each one's time and where everything is; exit
    code 1 if a chapter failed."""
    if args.cell_timeout is not None and args.cell_timeout <= 0:
        raise ValueError(f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout}")
    runs = run_course(args.out, args.profile, args.only, args.course_dir, args.quiet, args.cell_timeout)
    width = max(len(r.name) for r in runs)
    for r in runs:
        status = f"FAILED: {r.error}" if r.error else "ok"
        print(f"{r.name:<{width}}  {r.seconds:7.1f} s  {status}  {r.html}")
    print(f"total {sum(r.seconds for r in runs):.1f} s; open {Path(args.out) / 'index.html'}")
    return 1 if any(r.error for r in runs) else 0
