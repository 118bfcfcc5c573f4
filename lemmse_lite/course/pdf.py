"""The whole course as one PDF, offline: the book document of :mod:`lemmse_lite.course.pages` (every
chapter, numbered, with its bibliography, then the glossary) printed by a headless Chromium once
the local MathJax has typeset it. Only ``lemmse_lite.course`` imports it (``lemmse course --pdf``).

The browser is the system's Chromium (``apt-get install chromium``), else the one playwright
installed (``playwright install chromium``, which needs the network once).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

__all__ = ["browser_available", "find_chromium", "print_pdf"]

MATHJAX_DONE = ("() => window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0 "
                "&& MathJax.Hub.queue.running === 0")
#: Page numbers at the foot of every page (Chromium fills in the ``pageNumber`` class).
FOOTER = ("<div style='font-size:8px;width:100%;text-align:center;color:#555'>"
          "<span class='pageNumber'></span> / <span class='totalPages'></span></div>")


def find_chromium() -> str | None:
    """The system's Chromium, if any (None: playwright's own browser is tried instead)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_available() -> bool:
    """Whether a Chromium can print: the system's, or the one playwright installed."""
    if find_chromium() is not None:
        return True
    with sync_playwright() as p:
        return Path(p.chromium.executable_path).is_file()


def print_pdf(html: Path, pdf: Path, timeout_s: float = 600) -> int:
    """Print ``html`` to ``pdf`` (A4, page numbers, the headings as the PDF's outline) once
    MathJax is done; returns the number of pages. RuntimeError naming --pdf without a browser."""
    args = ["--no-sandbox"] if os.name == "posix" and os.geteuid() == 0 else []  # root: CI, containers
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=find_chromium(), headless=True, args=args)
        except PlaywrightError as err:
            raise RuntimeError("--pdf: no Chromium to print with (apt-get install chromium, or "
                               f"playwright install chromium): {str(err).splitlines()[0]}") from None
        try:
            page = browser.new_page()
            page.goto(html.resolve().as_uri())
            page.wait_for_function(MATHJAX_DONE, timeout=timeout_s * 1000)
            # paper cannot be clicked open: the answers are printed open (a page keeps them closed)
            page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
            page.pdf(path=str(pdf), format="A4", print_background=True, display_header_footer=True,
                     header_template="<div></div>", footer_template=FOOTER, outline=True, tagged=True,
                     margin={"top": "18mm", "bottom": "18mm", "left": "16mm", "right": "16mm"})
        finally:
            browser.close()
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf.read_bytes()))
