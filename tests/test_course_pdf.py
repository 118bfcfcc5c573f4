"""``lemmse course --pdf``: chapter 00 run for real and printed, offline, by headless Chromium
(Debian's ``chromium``) into one PDF with a contents list, numbered equations, the chapter's
figures and bibliography and the glossary. Its own module: playwright's sync API does not nest,
and tests/test_browser.py holds a browser open for its whole module.

Without Chromium it skips, unless ``LEMMSE_REQUIRE_BROWSER=1`` (CI), where it fails. The PDF is
kept in ``$LEMMSE_ARTIFACTS``.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from lemmse_lite.cli import main
from lemmse_lite.course.pdf import find_chromium

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LEMMSE_ARTIFACTS", ROOT / "lemmse_out" / "test-artifacts"))


@pytest.fixture
def chromium():
    if find_chromium() is None:
        if os.environ.get("LEMMSE_REQUIRE_BROWSER") == "1":
            pytest.fail("LEMMSE_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


def test_course_pdf(chromium, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["course", "--profile", "quick", "--only", "00", "--out", str(out), "--quiet", "--pdf"]) == 0
    printed = re.search(r"course\.pdf: (\d+) pages in (\d+) s", capsys.readouterr().out)
    assert printed and int(printed[1]) >= 8, printed                   # chapter 00 and the glossary
    assert (out / "course.pdf").read_bytes().startswith(b"%PDF")
    document = (out / "course_book.html").read_text(encoding="utf-8")
    assert "<a href='#00_inverse_problems--top'>00 · Inverse problems" in document   # contents
    assert "<span class='eqno'>(0.1)</span>" in document and "class='bibliography'" in document
    assert re.search(r"href='#glossary--term-[\w-]+'", document)          # terms lead to the glossary
    assert "data:image/png;base64," in document                            # the run's figures
    shutil.copy(out / "course.pdf", ARTIFACTS / "course_00.pdf")


def test_course_pdf_without_a_browser(tmp_path, monkeypatch, capsys):
    """No Chromium anywhere: one line naming --pdf, before any chapter runs."""
    monkeypatch.setattr("lemmse_lite.course.pdf.browser_available", lambda: False)
    assert main(["course", "--only", "00", "--out", str(tmp_path), "--pdf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--pdf" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "00_inverse_problems.ipynb").exists()
