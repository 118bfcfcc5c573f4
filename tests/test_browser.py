"""The learner's experience in a real browser (headless Chromium, Debian's ``chromium`` package,
driven by playwright pointed at the system browser).

1. JupyterLab started the way the README says (``JUPYTER_CONFIG_PATH=jupyter-config jupyter lab``,
   plus ``--allow-root`` as root, a free loopback port and a known token): a double click on
   ``course/01_ideal_mmse.md`` opens it as a notebook (cells, not a text editor), its first code
   cell runs and shows its output.
2. Every chapter, double-clicked there, reads as the book (jupyterlab-myst): no role or directive
   as text, no ``(label)=`` line, no bare label, no link without text, no failed formula.
3. The pages of ``lemmse course`` (every chapter rendered from the book's content build, without
   running it; the executed path is tests/test_course_cmd.py's) show none of these either, nor a
   citation key, and their answers are closed; a tiny chapter run for real has its formulas
   rendered by the local MathJax.
(``lemmse course --pdf`` is tests/test_course_pdf.py: playwright's sync API does not nest.)

Each chapter's counts go to ``markup_counts.json`` beside the screenshots. JupyterLab shows the
key of a citation (jupyterlab-myst 2.7 has no bibliography support): counted there, not failed.

Screenshots go to ``$LEMMSE_ARTIFACTS`` (default ``lemmse_out/test-artifacts``, git-ignored).
Without a browser the tests skip, unless ``LEMMSE_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from lemmse_lite.course import render_course, run_course

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LEMMSE_ARTIFACTS", ROOT / "lemmse_out" / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


#: Bibliography keys: shown as text, a citation was not resolved.
CITE_KEYS = re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "book" / "references.bib").read_text(), re.MULTILINE)

#: Counts, in the rendered prose of ``root`` (code, mathematics and editors left out), of MyST
#: that a learner should never see: roles or directives as text, ``(label)=`` lines, bare labels,
#: links without text, citation keys, mathematics that failed to render, and the boxes a renderer
#: puts in place of a directive or role it does not know ("proof:theorem - Unknown Directive").
SCAN_MARKUP = r"""([root, keys]) => {
  const prose = root.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, .jp-InputArea-editor, .jp-OutputArea, .outputs,'
    + ' .MathJax, .MathJax_Display, .MathJax_Preview, mjx-container, .katex, .math').forEach(e => e.remove());
  const text = prose.innerText;
  const count = (re) => (text.match(re) || []).length;
  const keyRe = keys.length ? new RegExp('(^|[^\\w-])@?(' + keys.join('|') + ')(?![\\w-])', 'g') : /$^/;
  const empty = [...root.querySelectorAll('a[href]')].filter(a => !a.textContent.trim()
    && !a.querySelector('img, svg, mjx-container, .MathJax, .katex')
    && !a.matches('.jp-InternalAnchorLink, .headerlink'));
  const failed = root.querySelectorAll('.MathJax_Error, mjx-merror, .katex-error, [data-mjx-error]').length;
  const errors = Math.max(failed, count(/Math Processing Error/g)) + count(/\\\(|\\\[|\$\$/g);
  return {roles: count(/\{[a-z][\w:-]*\}`?/g) + count(/^\s*(:::+|```)\s*\{?[\w:-]*\}?/gm),
          labels: count(/^\s*\([\w:-]+\)=\s*$/gm),
          bare: count(/(\(|#|\b)(eq|ch|fig|ex|thm|prop|sec)-[\w-]+\)?/g),
          empty_links: empty.length, cite_keys: count(keyRe), math_errors: errors,
          unknown: count(/Unknown (Directive|Role)/g)};
}"""


def scan(page, selector: str) -> dict[str, int]:
    """:data:`SCAN_MARKUP` over the elements ``selector`` matches (summed)."""
    totals: dict[str, int] = {}
    for handle in page.query_selector_all(selector):
        for key, n in page.evaluate(SCAN_MARKUP, [handle, CITE_KEYS]).items():
            totals[key] = totals.get(key, 0) + n
    return totals


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium; skip (or fail where a browser is required) without one."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        missing = f"playwright not importable ({err})"
    if CHROMIUM is None:
        missing = "no chromium on PATH (apt-get install chromium)"
    if missing:
        if os.environ.get("LEMMSE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LEMMSE_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _first_code_line(chapter: Path) -> str:
    """The first line of code of a MyST chapter's first code cell (cell options skipped)."""
    cell = re.search(r"^```\{code-cell\}[^\n]*\n(.*?)^```", chapter.read_text(), re.DOTALL | re.MULTILINE)[1]
    return next(ln for ln in cell.splitlines() if ln.strip() and not ln.startswith((":", "---")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url} within {seconds} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab at the repository root as the README starts it; user settings and workspaces in
    a temporary folder, so only the repository's configuration counts. Stopped afterwards."""
    port, token = _free_port(), secrets.token_hex(16)
    private = tmp_path_factory.mktemp("lab")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--LabApp.user_settings_dir={private / 'settings'}",
           f"--LabApp.workspaces_dir={private / 'workspaces'}"]
    settings = private / "settings" / "@jupyterlab"
    for plugin, value in {"docmanager-extension/plugin": '{"autosave": false}',   # never write the
                          "apputils-extension/notification": '{"fetchNews": "false"}',   # chapter
                          # every cell rendered, not only those in view: the scan reads them all
                          "notebook-extension/tracker": '{"windowingMode": "none"}'
                          }.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(value)
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(ROOT / "jupyter-config"), "LEMMSE_PROFILE": "quick",
           "JUPYTER_RUNTIME_DIR": str(private / "runtime")}
    env.pop("MPLBACKEND", None)
    with open(private / "lab.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield f"http://127.0.0.1:{port}", token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.copy(private / "lab.log", ARTIFACTS / "jupyterlab.log")
    assert proc.returncode is not None


def _run_cell(page, cell, tries=3):
    """Select ``cell`` and press Shift+Enter, until its prompt shows it queued or ran ("[*]" or a
    number): on a loaded machine a click may land before the cell takes the focus, and the key
    press is then lost. Pressing again is safe only while the prompt is still empty."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        cell.locator(".jp-InputPrompt").click()
        page.wait_for_function("c => c.classList.contains('jp-mod-selected')", arg=cell.element_handle())
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function("c => /\\[(\\*|\\d+)\\]/.test(c.querySelector('.jp-InputPrompt').innerText)",
                                   arg=cell.element_handle(), timeout=20_000)
            return
        except PlaywrightTimeout:
            continue  # the key press was lost: the prompt is still empty
    raise AssertionError(f"the cell did not start after {tries} Shift+Enter presses")


def test_the_markup_scan_counts_what_it_names(browser):
    """The scan on a known page: an unknown directive's box, a role as text, an empty link."""
    page = browser.new_page()
    try:
        page.set_content('<div id="r"><p>A {term}`patch` here.</p><p>See <a href="#x"></a>.</p>'
                         '<div><code>proof:theorem</code> - Unknown Directive</div><p>Fine prose.</p></div>')
        counts = page.evaluate(SCAN_MARKUP, [page.query_selector("#r"), CITE_KEYS])
        assert counts["unknown"] == 1 and counts["empty_links"] == 1 and counts["roles"] == 1
        assert counts["math_errors"] == 0
        page.set_content('<div id="r"><p>A theorem, rendered.</p></div>')
        clean = page.evaluate(SCAN_MARKUP, [page.query_selector("#r"), CITE_KEYS])
        assert not any(clean[key] for key in RAW)
    finally:
        page.close()


def test_chapter_opens_as_notebook_and_runs(browser, lab):
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{base}/lab?token={token}")
        listing = page.locator(".jp-DirListing-content")
        listing.locator(".jp-DirListing-item", has_text="course").first.dblclick()
        listing.locator(".jp-DirListing-item", has_text="01_ideal_mmse.md").first.dblclick()
        notebook = page.locator(".jp-NotebookPanel:visible")
        notebook.locator(".jp-MarkdownCell").first.wait_for()
        page.wait_for_function("document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= 3")
        assert notebook.locator(".jp-MarkdownCell").count() >= 1      # cells, not a text editor
        assert page.locator(".jp-FileEditor:visible").count() == 0
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
            timeout=120_000)                                        # the kernel is up
        first = notebook.locator(".jp-CodeCell").first
        _run_cell(page, first)
        assert _first_code_line(ROOT / "course" / "01_ideal_mmse.md") in first.locator(
            ".jp-InputArea-editor").inner_text()                      # the chapter's first code cell
        output = first.locator(".jp-OutputArea-output")
        output.first.wait_for(timeout=120_000)                        # its output (text or figure)
        assert first.locator(".jp-InputPrompt").inner_text().strip() == "[1]:"
        assert output.first.inner_text().strip() or output.locator("img").count()
        page.screenshot(path=ARTIFACTS / "jupyterlab_01_ideal_mmse.png")
    except Exception:
        page.screenshot(path=ARTIFACTS / "jupyterlab_failure.png")
        raise
    finally:
        page.close()


def test_course_page_renders_math(browser, tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_math.md").write_text(textwrap.dedent("""\
        ---
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---
        # Mathematics offline

        The posterior mean $\\mathbb E[x\\mid y]$ and a display:

        $$
        \\hat x(y) = \\sum_{n=1}^N \\frac{e^{-\\lVert y - x_n\\rVert^2/2\\sigma^2}}{Z}\\, x_n
        $$

        ```{code-cell} ipython3
        print(1 + 1)
        ```
        """))
    out = tmp_path / "site"
    (run,) = run_course(out, "quick", course_dir=chapters, quiet=True)
    assert run.error is None
    page = browser.new_page()
    try:
        page.goto(run.html.as_uri())
        page.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 "
                               "&& document.querySelectorAll('.MathJax, .MathJax_Display').length >= 2",
                               timeout=60_000)
        assert page.locator(".MathJax_Display").count() == 1      # the display formula
        assert page.locator(".MathJax_Error, .MathJax_Preview:has-text('$')").count() == 0
        assert "$\\mathbb" not in page.locator("body").inner_text()   # no raw TeX left
        page.screenshot(path=ARTIFACTS / "course_page_math.png", full_page=True)
    finally:
        page.close()


CHAPTERS = sorted(p.name for p in (ROOT / "course").glob("[0-9][0-9]_*.md"))
#: What no page may show; JupyterLab may still show citation keys (see the module's docstring).
RAW = ("roles", "labels", "bare", "empty_links", "math_errors", "unknown")
MATHJAX_DONE = ("() => window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0 "
                "&& MathJax.Hub.queue.running === 0")


def _record(name: str, counts: dict) -> None:
    """Add one chapter's counts to the artefact ``markup_counts.json``."""
    path = ARTIFACTS / "markup_counts.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = counts
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def _close_tab(page) -> None:
    """Close the chapter's tab, discarding what opening it changed (nothing is saved)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.keyboard.press("Alt+W")
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(timeout=2_000)
    except PlaywrightTimeout:  # no dialog: nothing was changed
        return
    dialog.locator("button", has_text="Discard").click()


def test_every_chapter_reads_as_the_book_in_jupyterlab(browser, lab):
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    shown = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    try:
        page.goto(f"{base}/lab?token={token}")
        listing = page.locator(".jp-DirListing-content")
        listing.locator(".jp-DirListing-item", has_text="course").first.dblclick()
        for chapter in CHAPTERS:
            listing.locator(".jp-DirListing-item", has_text=chapter).first.dblclick()
            page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel",
                         has_text=chapter).wait_for()                 # this chapter is in front
            page.locator(f"{shown} .jp-MarkdownCell .jp-RenderedMarkdown, {shown} .jp-MarkdownCell "
                         ".myst").first.wait_for()
            page.wait_for_function(f"[...document.querySelectorAll('{shown} .jp-MarkdownCell')].length "
                                   f"> 3 && !document.querySelector('{shown} .jp-MarkdownCell "
                                   ".jp-MarkdownOutput:empty')")
            page.wait_for_timeout(1500)                               # the last formulas typeset
            counts = scan(page, f"{shown} .jp-MarkdownCell")
            _record(f"jupyterlab/{chapter}", counts)
            page.screenshot(path=ARTIFACTS / f"jupyterlab_{chapter[:2]}.png")
            assert {k: counts[k] for k in RAW} == dict.fromkeys(RAW, 0), (chapter, counts)
            _close_tab(page)
    except Exception:
        page.screenshot(path=ARTIFACTS / "jupyterlab_chapters_failure.png")
        raise
    finally:
        page.close()


@pytest.fixture(scope="module")
def course_pages(tmp_path_factory):
    """The pages of every chapter, rendered from the book's content build without running them."""
    return render_course(tmp_path_factory.mktemp("pages"))


@pytest.mark.parametrize("chapter", [c[:-3] for c in CHAPTERS])
def test_course_page_reads_as_the_book(browser, course_pages, chapter):
    (path,) = [p for p in course_pages if p.stem == chapter]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.goto(path.as_uri())
        page.wait_for_function(MATHJAX_DONE, timeout=120_000)
        counts = scan(page, "body")
        _record(f"pages/{chapter}", counts)
        page.screenshot(path=ARTIFACTS / f"course_page_{chapter[:2]}.png")
        assert counts == dict.fromkeys([*RAW, "cite_keys"], 0), counts
        assert page.locator("details.solution[open]").count() == 0      # answers closed
        labelled = page.locator(".math.display[id]")
        assert page.locator(".math.display[id] .eqno").count() == labelled.count()   # numbered
    finally:
        page.close()

