"""Build the book offline and check what it built; exit 0 when the content is good, 1 otherwise.

    python scripts/check_book.py                      # content build, no execution (CI)
    python scripts/check_book.py --execute            # every chapter executed (mystmd's cache)
    python scripts/check_book.py --execute --only 00  # one chapter executed (CI's smoke)

The build is ``jupyter book build --site [--execute]`` in ``book/`` (or, with ``--only``, in a
temporary copy of the project under ``book/_build/check`` whose toc keeps the listed chapters).
Executing uses an external Jupyter server that this script starts rooted at the project
(``JUPYTER_BASE_URL``/``JUPYTER_TOKEN``, which mystmd supports) and stops afterwards, with the
build's own process group, so nothing is left running. Checks:

- the log: the pages were built, no error and no warning. Offline, the one tolerated failure is
  the fetch of the HTML theme (no network; the deploy workflow builds the HTML);
- references whose text carries a number (``[eq. (1.4)](#eq-mmse)``, ``[chapter 04](#ch-locality)``:
  the form across notebooks, which JupyterLab cannot resolve) carry the number the build gave
  their target;
- executed pages: every *figure cell* of a chapter (a code cell that makes a figure:
  ``fig = ...``, ``plt.show()``, ``plotting.*``) carries an image output on its built page.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import jupytext
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NETWORK = ("api.mystmd.org", "ENOTFOUND", "EAI_AGAIN", "myst templates list", "fetch failed",
           "getaddrinfo", "ECONNREFUSED", "ETIMEDOUT", "Myst CLI Versions", "Required:",
           "Querying template metadata")
FIGURE_CELL = re.compile(r"^\s*fig\b|plt\.show\(|^\s*plotting\.\w+\(|=\s*plotting\.\w+\(", re.MULTILINE)


def check_log(text: str) -> tuple[list[str], list[str], int | None]:
    """(errors, warnings, pages built) of a mystmd build log; network failures are not errors."""
    lines = text.splitlines()
    errors = [ln for ln in lines if ("⛔" in ln or re.search(r"\berror\b", ln, re.IGNORECASE))
              and not any(n in ln for n in NETWORK)]
    warnings = [ln for ln in lines if "⚠" in ln or "will not match folder structure" in ln]
    built = re.search(r"Built (\d+) pages", text)
    return errors, warnings, int(built.group(1)) if built else None


def figure_cells(source: str) -> list[str]:
    """The sources of the figure cells of a MyST chapter (``{code-cell}`` blocks)."""
    cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", source, re.DOTALL | re.MULTILINE)
    cells = [re.sub(r"\A(?:---\n.*?\n---\n|(?::[\w-]+:[^\n]*\n)+)", "", c, flags=re.DOTALL) for c in cells]
    return [c for c in cells if FIGURE_CELL.search(c)]  # cell options (:tags:, ---) stripped


def _code_blocks(node: dict):
    """(code, has_image) for every executable code cell of a built page, at any depth (a cell
    with a caption sits in a figure container): its sibling outputs hold an ``image/png``."""
    children = node.get("children", [])
    code = [c for c in children if c.get("type") == "code" and c.get("executable")]
    if code:
        outputs = json.dumps([c for c in children if c.get("type") == "outputs"])
        yield code[0].get("value", ""), '"image/png"' in outputs
    for child in children:
        yield from _code_blocks(child)


def check_page(page: dict, source: str) -> tuple[int, int, list[str]]:
    """(figure cells, figure cells with an image on the page, the sources of those without)."""
    images = {code.strip(): has for code, has in _code_blocks(page["mdast"])}
    wanted = figure_cells(source)
    missing = [c for c in wanted if not images.get(c.strip(), False)]
    return len(wanted), len(wanted) - len(missing), missing


#: A number a reference's hand-written text carries: "eq. (1.4)", "chapter 04", "exercise 5.2".
NUMBER = re.compile(r"\d+(?:\.\d+)*")


def _text(node: dict) -> str:
    return node.get("value", "") + "".join(_text(c) for c in node.get("children", []))


def _references(node: dict):
    """Every cross-reference and internal link of a page's tree, at any depth."""
    if node.get("type") in ("crossReference", "link") and node.get("identifier"):
        yield node
    for child in node.get("children", []):
        yield from _references(child)


def load_pages(content: Path) -> dict[str, dict]:
    """The built pages of a content build (``_build/site/content``), keyed by their data URL."""
    return {f"/{path.name}": json.loads(path.read_text(encoding="utf-8")) for path in content.glob("*.json")}


def check_numbers(pages: dict[str, dict]) -> tuple[int, list[str]]:
    """(references checked, mismatches): every reference whose own text carries a number (the
    form chapters use across notebooks, which JupyterLab cannot resolve) must carry the number
    the build gave its target: an equation's, figure's, exercise's or theorem's enumerator, or a
    chapter's two digits (the file its page was built from)."""
    checked, wrong = 0, []
    for page in pages.values():
        for ref in _references(page["mdast"]):
            written = NUMBER.findall(_text(ref))
            target = ref.get("enumerator")
            if target is None and ref.get("identifier", "").startswith("ch-"):
                built = pages.get(ref.get("dataUrl", ""), {}).get("location", "")
                target = Path(built).name[:2] or None
            if not written or target is None:
                continue
            checked += 1
            if written[-1] != target:
                wrong.append(f"{page.get('location', '?')}: '{_text(ref)}' -> #{ref['identifier']}, "
                             f"which the book numbers {target}")
    return checked, wrong


def _toc_files(toc: list) -> list[str]:
    files = []
    for entry in toc:
        if "file" in entry:
            files.append(entry["file"])
        files += _toc_files(entry.get("children", []))
    return files


def _keep(toc: list, keep) -> list:
    out = []
    for entry in toc:
        if "children" in entry:
            children = _keep(entry["children"], keep)
            if children:
                out.append({**entry, "children": children})
        elif keep(entry.get("file", "")):
            out.append(entry)
    return out


def write_downloads(project: Path, chapters: list[str]) -> None:
    """``project/downloads``: each chapter as a notebook (jupytext, without outputs) and
    ``lemmse-course.zip`` of the chapters' MyST sources and notebooks (the book's downloads)."""
    folder = project / "downloads"
    folder.mkdir(exist_ok=True)
    with zipfile.ZipFile(folder / "lemmse-course.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for file in chapters:
            source = project / file
            notebook = folder / f"{source.stem}.ipynb"
            jupytext.write(jupytext.read(source), notebook)
            archive.write(source, f"course/{source.name}")
            archive.write(notebook, f"course/{notebook.name}")


def make_project(only: list[str] | None) -> Path:
    """``book/`` itself, or with ``only`` a copy under ``book/_build/check`` keeping the pages
    outside course/ (intro.md as a stub, the others copied: the glossary, which the chapters'
    ``{term}`` roles point to) and the chapters whose number or name is listed (their sources
    linked, not copied)."""
    config = yaml.safe_load((BOOK / "myst.yml").read_text(encoding="utf-8"))
    if not only:
        write_downloads(BOOK, [f for f in _toc_files(config["project"]["toc"]) if f.startswith("course/")])
        return BOOK
    chapter = lambda f: Path(f).stem in only or Path(f).stem[:2] in only
    config["project"]["toc"] = _keep(config["project"]["toc"], lambda f: not f.startswith("course/")
                                     or chapter(f))
    if not any(chapter(f) for f in _toc_files(config["project"]["toc"])):
        raise SystemExit(f"--only: no chapter of book/myst.yml matches {' '.join(only)}")
    project = BOOK / "_build" / "check"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(BOOK / "references.bib", project / "references.bib")
    (project / "intro.md").write_text("# Check build\n\nA copy of the book with chapters "
                                      f"{', '.join(only)} only.\n", encoding="utf-8")  # no dangling links
    for file in _toc_files(config["project"]["toc"]):
        if not file.startswith("course/") and file != "intro.md":
            shutil.copy(BOOK / file, project / file)
    link = project / "course"
    if not link.is_symlink():
        link.symlink_to(ROOT / "course", target_is_directory=True)
    kept = [f for f in _toc_files(config["project"]["toc"]) if f.startswith("course/")]
    write_downloads(project, kept)
    config["project"]["downloads"] = [d for d in config["project"].get("downloads", [])
                                      if (project / d.get("file", "")).is_file()]
    (project / "myst.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return project


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Path, env: dict) -> tuple[subprocess.Popen, dict]:
    """A Jupyter server rooted at the project on a free loopback port; the env vars for mystmd."""
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter_server", f"--ServerApp.root_dir={project}", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise SystemExit(f"the Jupyter server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    return proc, {"JUPYTER_BASE_URL": url, "JUPYTER_TOKEN": token}
            except OSError:
                time.sleep(0.5)
        raise SystemExit("the Jupyter server did not answer within 120 s")
    except BaseException:  # not answering, or interrupted while waiting: never left running
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    """End the process group of ``proc`` (started with start_new_session) and wait for it."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def build(project: Path, execute: bool, log_path: Path, timeout: int) -> str:
    """Run the build (and, to execute, its Jupyter server); returns the log."""
    env = {**os.environ, "LEMMSE_PROFILE": os.environ.get("LEMMSE_PROFILE") or "quick"}
    env.pop("MPLBACKEND", None)  # the kernels' figures must be inline outputs
    server = None
    if execute:
        server, server_env = start_server(project, env)
        env.update(server_env)
    cmd = ["jupyter", "book", "build", "--site"] + (["--execute"] if execute else [])
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.write(f"\n⛔ check_book: the build ran past {timeout} s\n")
            stop(proc)
    finally:
        if server is not None:
            stop(server)
    return log_path.read_text(encoding="utf-8", errors="replace")


def check_content(project: Path) -> list[tuple[str, int, int, list[str]]]:
    """(chapter, figure cells, with an image, missing sources) for every chapter page built."""
    config = yaml.safe_load((project / "myst.yml").read_text(encoding="utf-8"))
    content = project / "_build" / "site" / "content"
    pages = {}
    for path in content.glob("*.json"):
        page = json.loads(path.read_text(encoding="utf-8"))
        pages[page.get("location", "").lstrip("/")] = page
    rows = []
    for file in _toc_files(config["project"]["toc"]):
        if not file.startswith("course/"):
            continue
        page = pages.get(file)
        if page is None:
            rows.append((Path(file).stem, -1, 0, ["(no built page)"]))
            continue
        rows.append((Path(file).stem, *check_page(page, (project / file).read_text(encoding="utf-8"))))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", action="store_true", help="execute the chapters (offline)")
    parser.add_argument("--only", nargs="+", default=None, metavar="CHAPTER",
                        help="build a copy of the book with only these chapters (number or name)")
    parser.add_argument("--log", default=str(ROOT / "book-build.log"), help="where the build log goes")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds for the whole build")
    args = parser.parse_args(argv)
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the server and the build are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    project = make_project(args.only)
    start = time.perf_counter()
    text = build(project, args.execute, Path(args.log), args.timeout)
    seconds = time.perf_counter() - start
    errors, warnings, pages = check_log(text)
    toc = _toc_files(yaml.safe_load((project / "myst.yml").read_text(encoding="utf-8"))["project"]["toc"])
    if pages is not None and pages != len(toc):
        errors.append(f"built {pages} pages, the toc lists {len(toc)}")
    if pages is not None:
        checked, wrong = check_numbers(load_pages(project / "_build" / "site" / "content"))
        print(f"  hand-written reference numbers: {checked} checked, {len(wrong)} wrong")
        errors += wrong
    ok = pages is not None and not errors and not warnings
    print(f"book build ({'executed' if args.execute else 'content'}) in {seconds:.0f} s: "
          f"{pages if pages is not None else 'no'} pages, {len(errors)} errors, {len(warnings)} warnings")
    for ln in errors + warnings:
        print("  " + ln.strip())
    cached = text.count("Adding cached notebook outputs")
    if args.execute:
        print(f"  execution: {text.count('Executing notebook')} chapters executed, {cached} from the cache")
        for name, wanted, found, missing in check_content(project):
            print(f"  {name}: {found}/{wanted} figure cells with their figure on the page")
            for cell in missing:
                print("    missing: " + cell.strip().splitlines()[0][:90])
            ok = ok and not missing and wanted >= 0
    print("book check: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
