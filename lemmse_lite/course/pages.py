"""The offline pages of ``lemmse course``: the book's own content build, rendered to HTML.

mystmd (the engine of the published book, bundled with ``jupyter-book``) already resolves what a
plain Markdown renderer shows raw: it numbers equations, figures, exercises and theorems, resolves
references within and across chapters, turns ``{cite:t}`` and ``[@key]`` into author-year text with
a bibliography, links glossary terms. Its offline content build (``jupyter book build --site``,
seconds, no network) writes that as one JSON tree per page. This module

- builds a small project of the chapters being run (:func:`build_content`), using the book's own
  configuration (``book/myst.yml``: numbering, bibliography, abbreviations, glossary);
- renders each page's tree to HTML (:class:`Renderer`), with the outputs of the executed
  notebook in place of each code cell's (empty) outputs, the mathematics left as TeX for the
  local MathJax, the answers of exercises in closed dropdowns, and a bibliography per page.

Only ``lemmse_lite.course`` imports it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from html import escape
from pathlib import Path

import yaml

__all__ = ["BookPage", "Renderer", "build_content", "find_book_dir"]

#: Keys of ``book/myst.yml``'s project kept for the pages (the rest is the published site's).
PROJECT_KEYS = ("title", "numbering", "abbreviations", "math", "bibliography")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CHAPTER = re.compile(r"^\d\d_")


class BookPage(dict):
    """One page of the content build (its JSON): ``mdast``, ``frontmatter``, ``references``."""

    @property
    def stem(self) -> str:
        """The file name of its source without suffix (``04_locality``)."""
        return Path(self.get("location", "")).stem

    @property
    def title(self) -> str:
        return self.get("frontmatter", {}).get("title", self.stem)


def find_book_dir(course_dir: Path) -> Path | None:
    """The book project beside the chapters (``book/myst.yml`` next to ``course/``), if any."""
    book = course_dir.resolve().parent / "book"
    return book if (book / "myst.yml").is_file() else None


def _project_config(book: Path | None, chapters: list[Path], glossary: bool) -> dict:
    """``myst.yml`` of the pages' project: the book's numbering, bibliography and abbreviations,
    a toc of the chapters run (and the glossary)."""
    base = yaml.safe_load((book / "myst.yml").read_text(encoding="utf-8")) if book else {}
    project = {k: v for k, v in base.get("project", {}).items() if k in PROJECT_KEYS}
    project.setdefault("numbering", {"heading_1": False, "equation": True, "figure": True})
    if book is None or not (book / "references.bib").is_file():
        project.pop("bibliography", None)
    toc = [{"file": f"course/{c.name}"} for c in chapters]
    if glossary:
        toc.append({"file": "glossary.md"})
    project["toc"] = toc
    project["exclude"] = ["**/*.ipynb", "_build/**", "_template/**"]
    return {"version": 1, "project": project, "site": {"template": "./_template"}}


def _write_project(project: Path, chapters: list[Path], book: Path | None) -> None:
    """The project folder: myst.yml, the chapters (copied: the sources are only read), the
    book's bibliography and glossary."""
    if project.exists():
        shutil.rmtree(project)
    (project / "course").mkdir(parents=True)
    for chapter in chapters:
        shutil.copy(chapter, project / "course" / chapter.name)
    glossary = book is not None and (book / "glossary.md").is_file()
    if glossary:
        shutil.copy(book / "glossary.md", project / "glossary.md")
    if book is not None and (book / "references.bib").is_file():
        shutil.copy(book / "references.bib", project / "references.bib")
    # A local (empty) site template: the book's theme would be fetched from the network, and
    # the pages need only the content build, which writes the resolved tree of every page.
    (project / "_template").mkdir()
    (project / "_template" / "template.yml").write_text("myst: v1\nkind: site\ntitle: offline pages\n")
    config = _project_config(book, chapters, glossary)
    (project / "myst.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def build_content(chapters: list[Path], work: Path, timeout: int = 600) -> dict[str, BookPage]:
    """Build the chapters' content offline with mystmd in ``work`` (a fresh project there);
    returns the built pages keyed by their data URL (``/course.locality.json``). RuntimeError
    with the end of the log when the build fails."""
    _write_project(work, chapters, find_book_dir(chapters[0].parent))
    # Without Node.js, jupyter-book would ask (on stdin) to download one: never, unless the
    # learner allowed it in JB_ALLOW_NODEENV; the pages then fall back (course.content_build).
    env = {**os.environ, "JB_ALLOW_NODEENV": os.environ.get("JB_ALLOW_NODEENV", "no")}
    env.pop("MPLBACKEND", None)
    run = subprocess.run([sys.executable, "-m", "jupyter_book", "build", "--site"], cwd=work, env=env,
                         timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         check=False)
    content = work / "_build" / "site" / "content"
    if not content.is_dir() or not re.search(r"Built \d+ pages?", run.stdout + run.stderr):
        raise RuntimeError("the book's content build failed:\n" + (run.stdout + run.stderr)[-3000:])
    return {f"/{p.name}": BookPage(json.loads(p.read_text(encoding="utf-8")))
            for p in content.glob("*.json")}


def _text(node: dict) -> str:
    return node.get("value", "") + "".join(_text(c) for c in node.get("children", []))


def _ansi_free(text) -> str:
    return ANSI.sub("", "".join(text) if isinstance(text, list) else text)


def render_outputs(outputs: list) -> str:
    """A code cell's executed outputs (nbformat) as HTML: text, tables, embedded figures,
    errors; widgets, which need a live kernel, as a note."""
    parts = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(f"<pre class='output stream'>{escape(_ansi_free(out.get('text', '')))}</pre>")
        elif kind == "error":
            trace = _ansi_free("\n".join(out.get("traceback", [])))
            parts.append(f"<pre class='output error'>{escape(trace)}</pre>")
        elif kind in ("display_data", "execute_result"):
            parts.append(_render_data(out.get("data", {})))
    return "".join(parts)


def _render_data(data: dict) -> str:
    """The richest form of one display output."""
    if "image/png" in data:
        png = data["image/png"]
        png = png if isinstance(png, str) else base64.b64encode(png).decode()
        return f"<img class='output' src='data:image/png;base64,{png.strip()}' alt='figure'>"
    if "image/svg+xml" in data:
        return f"<div class='output'>{_ansi_free(data['image/svg+xml'])}</div>"
    if "application/vnd.jupyter.widget-view+json" in data:
        return ("<p class='output widget'>(An interactive widget: run the chapter in JupyterLab "
                "to use it.)</p>")
    if "text/html" in data:
        return f"<div class='output html'>{_ansi_free(data['text/html'])}</div>"
    if "text/plain" in data:
        return f"<pre class='output'>{escape(_ansi_free(data['text/plain']))}</pre>"
    return ""


#: Nodes that are one HTML element around their children.
PLAIN_TAGS = {"emphasis": "em", "strong": "strong", "superscript": "sup", "subscript": "sub",
              "listItem": "li", "blockquote": "blockquote", "table": "table", "tableRow": "tr",
              "caption": "figcaption", "definitionList": "dl", "definitionDescription": "dd"}


class Renderer:
    """HTML of one built page. ``href(stem, anchor)`` is the link to an anchor of another page
    (or of this one); ``anchor(id)`` the id an element gets (both let one document hold every
    chapter, for the PDF); ``outputs`` maps a code cell's source to its executed outputs."""

    def __init__(self, pages: dict[str, BookPage], page: BookPage, outputs: dict | None = None,
                 href=None, anchor=None):
        self.pages, self.page = pages, page
        self.outputs = outputs or {}
        self.href = href or (lambda stem, aid: (f"{stem}.html" if stem != page.stem else "")
                             + (f"#{aid}" if aid else ""))
        self.anchor = anchor or (lambda aid: aid)

    def render(self, node: dict) -> str:
        """The HTML of ``node`` and its children; an unknown node shows its children only."""
        kind = node.get("type", "")
        if kind in PLAIN_TAGS:
            tag = PLAIN_TAGS[kind]
            return f"<{tag}>{self.children(node)}</{tag}>"
        method = getattr(self, f"_n_{kind}", None)
        return method(node) if method else self.children(node)

    def children(self, node: dict) -> str:
        return "".join(self.render(c) for c in node.get("children", []))

    def _id(self, node: dict) -> str:
        aid = node.get("html_id") or node.get("identifier")
        return f" id='{escape(self.anchor(aid))}'" if aid else ""

    def _target_stem(self, node: dict) -> str:
        """The page a reference leads to (``04_locality``), from its data URL."""
        target = self.pages.get(node.get("dataUrl", ""))
        return target.stem if target is not None else self.page.stem

    # text and inline nodes
    def _n_text(self, node):
        return escape(node.get("value", ""))

    def _n_inlineMath(self, node):
        return f"<span class='math'>\\({escape(node.get('value', ''))}\\)</span>"

    def _n_math(self, node):
        number = node.get("enumerator")
        tag = f"<span class='eqno'>({escape(number)})</span>" if number else ""
        tex = f"<div class='tex'>\\[{escape(node.get('value', ''))}\\]</div>"
        return f"<div class='math display'{self._id(node)}>{tex}{tag}</div>"

    def _n_inlineCode(self, node):
        return f"<code>{escape(node.get('value', ''))}</code>"

    def _n_break(self, node):
        return "<br>"

    def _n_html(self, node):
        return node.get("value", "")

    def _n_comment(self, node):
        return ""

    def _n_abbreviation(self, node):
        return f"<abbr title='{escape(node.get('title', ''))}'>{self.children(node)}</abbr>"

    def _n_mystTarget(self, node):
        return f"<span{self._id(node)}></span>"

    # links, references, citations
    def _n_link(self, node):
        url = node.get("url", "")
        if node.get("internal") or url.startswith("/"):
            stem = self._target_stem(node)
            ident = node.get("identifier", "")
            aid = "" if ident.startswith("ch-") or not ident else node.get("html_id", ident)
            url = self.href(stem, aid)
        body = self.children(node) or escape(url)
        return f"<a href='{escape(url)}'>{body}</a>"

    def _n_crossReference(self, node):
        """A reference: its resolved text (the number, or the hand-written text carrying it),
        linked to the target on this page, another chapter's page or the glossary."""
        body = self.children(node)
        if not body.strip():
            template = node.get("template", "%s").replace("{name}", "%s")
            body = escape(template.replace("%s", node.get("enumerator", node.get("label", ""))))
        stem = self._target_stem(node) if node.get("remote") else self.page.stem
        aid = node.get("html_id") or node.get("identifier", "")
        kind = node.get("kind", "")
        return f"<a class='xref {escape(kind)}' href='{escape(self.href(stem, aid))}'>{body}</a>"

    def _n_citeGroup(self, node):
        cites = [self.render(c) for c in node.get("children", [])]
        if node.get("kind") == "parenthetical":
            return f"({'; '.join(cites)})"
        return ", ".join(cites)

    def _n_cite(self, node):
        key = node.get("identifier") or node.get("label", "")
        body = self.children(node) or escape(key)
        return f"<a class='cite' href='#{escape(self.anchor('ref-' + key))}'>{body}</a>"

    def bibliography(self) -> str:
        """The works this page cites, in the order it first cites them (author-year text)."""
        cite = self.page.get("references", {}).get("cite", {})
        entries = [(key, cite.get("data", {}).get(key, {}).get("html", escape(key)))
                   for key in cite.get("order", [])]
        if not entries:
            return ""
        items = "".join(f"<li id='{escape(self.anchor('ref-' + k))}'>{html}</li>" for k, html in entries)
        return f"<section class='bibliography'><h2>References</h2><ul>{items}</ul></section>"

    # blocks
    def _n_paragraph(self, node):
        return f"<p>{self.children(node)}</p>\n"

    def _n_heading(self, node):
        depth = min(int(node.get("depth", 2)), 6)
        return f"<h{depth}{self._id(node)}>{self.children(node)}</h{depth}>\n"

    def _n_list(self, node):
        tag = "ol" if node.get("ordered") else "ul"
        start = f" start='{node['start']}'" if node.get("ordered") and node.get("start") else ""
        return f"<{tag}{start}>{self.children(node)}</{tag}>\n"

    def _n_thematicBreak(self, node):
        return "<hr>\n"

    def _n_tableCell(self, node):
        tag = "th" if node.get("header") else "td"
        align = f" style='text-align:{node['align']}'" if node.get("align") else ""
        return f"<{tag}{align}>{self.children(node)}</{tag}>"

    def _n_block(self, node):
        return f"<div class='block'>{self.children(node)}</div>\n"

    def _n_code(self, node):
        """A code cell's source (unless ``remove-input``) and the executed outputs that belong
        to it; any other code block as it is."""
        if not node.get("executable"):
            return f"<pre class='code'><code>{escape(node.get('value', ''))}</code></pre>\n"
        queue = self.outputs.get(node.get("value", "").strip(), [])
        self._pending = queue.pop(0) if queue else []
        if node.get("visibility") in ("remove", "hide"):
            return ""
        return f"<pre class='code cell'><code>{escape(node.get('value', ''))}</code></pre>\n"

    def _n_outputs(self, node):
        pending, self._pending = getattr(self, "_pending", []), []
        if node.get("visibility") == "remove":
            return ""
        return f"<div class='outputs'{self._id(node)}>{render_outputs(pending)}</div>\n"

    def _n_image(self, node):
        alt = escape(node.get("alt", ""))
        return f"<img src='{escape(node.get('url', ''))}' alt='{alt}'>"

    def _n_container(self, node):
        return f"<figure{self._id(node)}>{self.children(node)}</figure>\n"

    def _n_captionNumber(self, node):
        return f"<span class='caption-number'>{self.children(node)}</span> "

    def _n_admonitionTitle(self, node):
        return f"<p class='admonition-title'>{self.children(node)}</p>"

    def _n_admonition(self, node):
        """A note, tip or warning box; with ``:class: dropdown``, closed until clicked."""
        classes = (node.get("class") or "").split()
        kind = node.get("kind") or next((c for c in classes if c != "dropdown"), "note")
        kids = node.get("children", [])
        if not kids or kids[0].get("type") != "admonitionTitle":
            kids = [{"type": "admonitionTitle", "children": [{"type": "text", "value": kind.title()}]}] + kids
        return self._box(f"admonition {kind}", "dropdown" in classes, node, kids)

    def _box(self, css: str, closed: bool, node: dict, kids: list) -> str:
        """A titled box; ``closed``: a ``<details>`` whose summary is the title."""
        title = self.render(kids[0]) if kids and kids[0].get("type") == "admonitionTitle" else ""
        body = "".join(self.render(k) for k in (kids[1:] if title else kids))
        if closed:
            summary = re.sub(r"^<p class='admonition-title'>(.*)</p>$", r"\1", title, flags=re.DOTALL)
            return (f"<details class='{css}'{self._id(node)}><summary class='admonition-title'>"
                    f"{summary}</summary>{body}</details>\n")
        return f"<aside class='{css}'{self._id(node)}>{title}{body}</aside>\n"

    def _numbered_title(self, word: str, node: dict) -> dict:
        """The title node of an exercise or theorem: "Exercise 5.1", then its own title, if any."""
        kids = node.get("children", [])
        own = kids[0].get("children", []) if kids and kids[0].get("type") == "admonitionTitle" else []
        number = f" {node['enumerator']}" if node.get("enumerator") else ""
        head = [{"type": "strong", "children": [{"type": "text", "value": f"{word}{number}"}]}]
        if own:
            head += [{"type": "text", "value": " ("}, *own, {"type": "text", "value": ")"}]
        return {"type": "admonitionTitle", "children": head}

    def _n_exercise(self, node):
        kids = node.get("children", [])
        body = kids[1:] if kids and kids[0].get("type") == "admonitionTitle" else kids
        return self._box("exercise", False, node, [self._numbered_title("Exercise", node), *body])

    def _n_proof(self, node):
        """A theorem, proposition, lemma… (numbered) or a proof."""
        kind = (node.get("kind") or "proof").split(":")[-1]
        kids = node.get("children", [])
        body = kids[1:] if kids and kids[0].get("type") == "admonitionTitle" else kids
        title = self._numbered_title(kind.title(), node)
        return self._box(f"proof {kind}", False, node, [title, *body])

    def _n_solution(self, node):
        """The answer to an exercise: closed (a dropdown) unless the chapter opens it."""
        closed = "dropdown" in (node.get("class") or "")
        return self._box("solution", closed, node, node.get("children", []))

    def _n_details(self, node):
        kids = node.get("children", [])
        summary = self.render(kids[0]) if kids and kids[0].get("type") == "summary" else "Details"
        body = "".join(self.render(k) for k in kids[1:] if k.get("type") != "summary")
        return f"<details class='dropdown'{self._id(node)}><summary>{summary}</summary>{body}</details>\n"

    def _n_summary(self, node):
        return self.children(node)

    def _n_definitionTerm(self, node):
        return f"<dt{self._id(node)}>{self.children(node)}</dt>"

    def _n_footnoteReference(self, node):
        return f"<sup><a href='#fn-{escape(node.get('identifier', ''))}'>{escape(str(node.get('enumerator', '*')))}</a></sup>"

    def _n_footnoteDefinition(self, node):
        return f"<div class='footnote' id='fn-{escape(node.get('identifier', ''))}'>{self.children(node)}</div>"


def code_outputs(nb) -> dict[str, list]:
    """The executed outputs of a notebook's code cells, keyed by their source (a queue per
    source: the same code may appear twice)."""
    outputs: dict[str, list] = {}
    for cell in nb.cells if nb is not None else []:
        if cell.cell_type == "code":
            outputs.setdefault(cell.source.strip(), []).append(cell.get("outputs", []))
    return outputs


#: The pages' style: a readable column, boxes for admonitions, exercises and theorems.
STYLE = """
body{font-family:Georgia,'DejaVu Serif',serif;max-width:52rem;margin:2rem auto;padding:0 1rem;
     line-height:1.55;color:#1d1d1d}
h1,h2,h3,h4,nav,.admonition-title,figcaption{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif}
a{color:#0b5cad;text-decoration:none} a:hover{text-decoration:underline}
pre{background:#f6f8fa;padding:.6rem .8rem;overflow-x:auto;font-size:.85rem;border-radius:4px}
pre.output{background:#fff;border-left:3px solid #d0d7de} pre.error{background:#fff0f0}
img.output{max-width:100%} figure{margin:1rem 0} figcaption{font-size:.92rem;color:#333}
.caption-number{font-weight:bold}
.math.display{display:flex;align-items:center} .math.display .tex{flex:1;overflow-x:auto}
.eqno{padding-left:1rem}
aside,details.admonition,details.solution,details.dropdown{border:1px solid #d0d7de;
     border-left:4px solid #8c959f;border-radius:4px;padding:.2rem .9rem;margin:1rem 0}
.tip{border-left-color:#1a7f37!important} .warning{border-left-color:#bf8700!important}
.note{border-left-color:#0969da!important} .exercise{border-left-color:#8250df!important}
.proof{border-left-color:#57606a!important;background:#fafbfc}
.admonition-title{font-weight:bold;margin:.5rem 0} summary{cursor:pointer;font-weight:bold;margin:.5rem 0}
table{border-collapse:collapse;margin:1rem 0} td,th{border:1px solid #d0d7de;padding:.25rem .5rem}
nav{display:flex;justify-content:space-between;font-size:.9rem;border-bottom:1px solid #ddd;
    padding-bottom:.4rem} .bibliography li{margin:.4rem 0}
@media print{nav{display:none} .chapter{break-before:page} pre{white-space:pre-wrap;
     overflow-wrap:anywhere} figure,img,.math.display{break-inside:avoid}}
"""

#: MathJax 2 (the local copy): TeX between \\( \\) and \\[ \\], never a stray dollar sign. The
#: copy jupyter-server-mathjax ships holds the STIX-Web fonts only: left on MathJax's default TeX
#: fonts, every prime (``z'``) and a few other symbols end in "[Math Processing Error]" (their
#: font data, ``fonts/TeX/fontdata.js``, is not there), so the pages name STIX-Web.
MATHJAX_INIT = ("MathJax.Hub.Config({tex2jax:{inlineMath:[['\\\\(','\\\\)']],displayMath:[['\\\\[','\\\\]']],"
                "processEscapes:false,processEnvironments:true},TeX:{extensions:['AMSmath.js','AMSsymbols.js'],"
                "equationNumbers:{autoNumber:'none'}},messageStyle:'none',"
                "'HTML-CSS':{availableFonts:[],webFont:'STIX-Web',imageFont:null,preferredFont:null},"
                "SVG:{font:'STIX-Web'}});")


def html_document(title: str, body: str, mathjax_url: str) -> str:
    """A whole page: the style, the local MathJax, ``body``."""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style>"
            f"<script type='text/x-mathjax-config'>{MATHJAX_INIT}</script>"
            f"<script src='{escape(mathjax_url)}'></script></head>\n<body>\n{body}\n</body></html>\n")


def chapter_heading(page: BookPage) -> str:
    """"04 · Locality: the LE-MMSE" for a chapter, the title for any other page."""
    number = page.stem[:2] if CHAPTER.match(page.stem) else ""
    return f"{number} · {page.title}" if number else page.title


def page_body(pages: dict[str, BookPage], page: BookPage, nb=None, href=None, anchor=None) -> str:
    """One chapter's article: its title, its tree (with the executed outputs of ``nb``) and its
    bibliography."""
    renderer = Renderer(pages, page, code_outputs(nb), href, anchor)
    aid = (anchor or (lambda a: a))("top")
    return (f"<article class='chapter' id='{escape(aid)}'><h1>{escape(chapter_heading(page))}</h1>\n"
            f"{renderer.render(page['mdast'])}{renderer.bibliography()}</article>")


def write_page(path: Path, pages: dict[str, BookPage], page: BookPage, nb, mathjax_url: str,
               nav: str = "") -> None:
    """``path``: one page of the offline book (a chapter or the glossary)."""
    body = f"<nav>{nav}</nav>\n{page_body(pages, page, nb)}"
    path.write_text(html_document(page.title, body, mathjax_url), encoding="utf-8")


def find_page(pages: dict[str, BookPage], stem: str) -> BookPage | None:
    """The built page of a source file (``04_locality``, ``glossary``)."""
    return next((p for p in pages.values() if p.stem == stem), None)


def book_body(pages: dict[str, BookPage], stems: list[str], notebooks: dict, title: str) -> str:
    """Every page of ``stems`` in one document (for the PDF): a title, a table of contents, then
    each chapter with its bibliography and the glossary; anchors are prefixed with their page's
    name (``04_locality--eq-lemmse``), so references across chapters stay inside the document."""
    href = lambda stem, aid: f"#{stem}--{aid or 'top'}"  # the renderer's link maker
    toc, chapters = [], []
    for stem in stems:
        page = find_page(pages, stem)
        if page is None:
            continue
        anchor = lambda aid, s=stem: f"{s}--{aid}"
        toc.append(f"<li><a href='#{stem}--top'>{escape(chapter_heading(page))}</a></li>")
        chapters.append(page_body(pages, page, notebooks.get(stem), href, anchor))
    cover = (f"<section class='cover'><h1>{escape(title)}</h1><h2>Contents</h2>"
             f"<ul class='toc'>{''.join(toc)}</ul></section>")
    return cover + "\n".join(chapters)
