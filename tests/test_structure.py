"""The structural rules of issue 10's "Done when", read from the source with ``ast``:

(a) no import of a package module inside a function body (``from . import x``, ``from .x import
    y``, ``import lemmse_lite...``, ``from lemmse_lite... import``), except in ``cli.py``, which
    may import a subcommand's modules lazily to start fast;
(b) no ``global`` (nor ``nonlocal``) statement anywhere in the package;
(c) no function or method longer than 60 lines, counted from its ``def`` line to the last line
    of its body, decorators excluded, minus the lines of its docstring (if any).

and of issue 26's (no process-wide side effects from a library call, one home per mechanism):

(d) ``torch.set_num_threads``/``set_num_interop_threads`` only in the engine's one context
    manager (``_ThreadBudget.single_threaded``, restored on exit);
(e) ``warnings.filterwarnings``/``simplefilter`` only inside ``with warnings.catch_warnings()``;
(f) no ``socket.setdefaulttimeout`` in the library's process (torchvision's download, which takes
    no timeout, runs in a child process whose sockets alone get one);
(g) no global ``torch.manual_seed`` (``torch.random.``/``torch.cuda.`` too) outside
    ``with torch.random.fork_rng()``: seeded draws use a ``torch.Generator``;
(h) one atomic writer: ``os.replace``/``os.rename`` only in ``files.atomic_write``;
(i) one online-softmax merge: a function that takes a running maximum (``torch.maximum``) and
    rescales by ``exp`` of a difference with it exists once, ``SoftmaxState.running_max``;

and of its layout (the folders show the architecture):

(j) the folders are ``estimators``, ``networks``, ``experiments`` and ``course``, no deeper; no two
    modules share a name (a module's name is its file stem, a package's ``__init__`` the package's);
(k) imports run one way: the top-level modules (the foundations: checks, operators, data, store,
    ...) import no folder, except the command line (``cli``, ``__main__``); ``estimators`` and
    ``networks`` import only the top level; ``course`` the top level and ``estimators``;
    ``experiments`` the top level, ``estimators`` and ``networks``.

Each test lists every violation (file:line and name), so a failure is a to-do list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lemmse_lite"
MAX_LINES = 60
LAZY_IMPORTS_ALLOWED = {"cli.py"}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _is_package_import(node) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "lemmse_lite"
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "lemmse_lite" for alias in node.names)
    return False


def function_length(fn) -> int:
    """Lines from the ``def`` line to the end of the body, minus the docstring's lines."""
    length = fn.end_lineno - fn.lineno + 1
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        length -= body[0].end_lineno - body[0].lineno + 1
    return length


def lazy_package_imports(tree):
    """``(line, function name)`` of each package import inside a function body."""
    found = []
    for fn in _functions(tree):
        for node in ast.walk(fn):
            if _is_package_import(node):
                found.append((node.lineno, fn.name))
    return sorted(set(found))


def global_statements(tree):
    return [(n.lineno, type(n).__name__.lower()) for n in ast.walk(tree) if isinstance(n, (ast.Global, ast.Nonlocal))]


def long_functions(tree, limit=MAX_LINES):
    return [(fn.lineno, fn.name, function_length(fn)) for fn in _functions(tree) if function_length(fn) > limit]


# ----------------------------------------------------------------------------- the rules

def test_no_package_import_inside_a_function():
    bad = [f"{p.name}:{line} in {name}()" for p in _modules() if p.name not in LAZY_IMPORTS_ALLOWED
           for line, name in lazy_package_imports(_tree(p))]
    assert not bad, "package imports inside function bodies: " + ", ".join(bad)


def test_no_global_statement():
    bad = [f"{p.name}:{line} ({kind})" for p in _modules() for line, kind in global_statements(_tree(p))]
    assert not bad, "global/nonlocal statements: " + ", ".join(bad)


def test_no_function_longer_than_60_lines():
    bad = [f"{p.name}:{line} {name}() {n} lines" for p in _modules() for line, name, n in long_functions(_tree(p))]
    assert not bad, f"functions longer than {MAX_LINES} lines (docstrings excluded): " + ", ".join(bad)


def _call_name(node) -> str:
    """Dotted name of a call's function (``torch.random.manual_seed``), '' when not a plain name."""
    parts, f = [], node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if not isinstance(f, ast.Name):
        return ""
    return ".".join([f.id, *reversed(parts)])


def _calls_with_context(tree):
    """``(call, enclosing function name, dotted names of the enclosing with-items' calls)``."""
    found = []

    def visit(node, fn, withs):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fn = node.name
        if isinstance(node, (ast.With, ast.AsyncWith)):
            withs = withs + tuple(_call_name(i.context_expr) for i in node.items if isinstance(i.context_expr, ast.Call))
        if isinstance(node, ast.Call):
            found.append((node, fn, withs))
        for child in ast.iter_child_nodes(node):
            visit(child, fn, withs)

    visit(tree, "<module>", ())
    return found


def side_effects(tree, filename=""):
    """``(line, what)`` of every process-wide side effect of rules (d)-(h)."""
    bad = []
    for call, fn, withs in _calls_with_context(tree):
        name = _call_name(call)
        last = name.rsplit(".", 1)[-1]
        if last in ("set_num_threads", "set_num_interop_threads") and name.startswith("torch.") \
                and not (filename == "engine.py" and fn == "single_threaded"):
            bad.append((call.lineno, name))
        elif name in ("warnings.filterwarnings", "warnings.simplefilter") and "warnings.catch_warnings" not in withs:
            bad.append((call.lineno, name))
        elif last == "setdefaulttimeout":
            bad.append((call.lineno, name))
        elif name in ("torch.manual_seed", "torch.random.manual_seed", "torch.cuda.manual_seed",
                      "torch.cuda.manual_seed_all", "torch.seed") and "torch.random.fork_rng" not in withs:
            bad.append((call.lineno, name))
        elif name in ("os.replace", "os.rename") and filename != "files.py":
            bad.append((call.lineno, name))
    return sorted(bad)


def _names(node) -> set:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def online_softmax_merges(tree):
    """Functions that take a running maximum ``x = torch.maximum(...)`` and call ``exp`` (``torch.exp``
    or ``.exp()``/``.exp_()``) on an expression with a difference (``−``, ``.sub``, ``.sub_``)
    involving ``x``."""
    found = []
    for fn in _functions(tree):
        maxima = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                    and _call_name(node.value).endswith("torch.maximum"):
                for target in node.targets:
                    maxima |= _names(target)
        for node in ast.walk(fn):
            if not (maxima and isinstance(node, ast.Call)):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("exp", "exp_"):
                arg = node.args[0] if _call_name(node) == "torch.exp" and node.args else f.value
                subs = [b for b in ast.walk(arg) if isinstance(b, ast.BinOp) and isinstance(b.op, ast.Sub)]
                subs += [a for c in ast.walk(arg) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                         and c.func.attr in ("sub", "sub_") for a in c.args]
                if any(_names(b) & maxima for b in subs):
                    found.append((fn.lineno, fn.name))
                    break
    return found


def test_no_process_wide_side_effects():
    bad = [f"{p.name}:{line} {what}" for p in _modules() for line, what in side_effects(_tree(p), p.name)]
    assert not bad, "process-wide side effects in library code: " + ", ".join(bad)


def test_one_online_softmax_merge():
    found = [f"{p.name}:{line} {name}()" for p in _modules() if p.name != "reference.py"
             for line, name in online_softmax_merges(_tree(p))]
    # reference.py is the independent float64 reference, kept apart on purpose
    assert found == [f"engine.py:{_merge_line()} running_max()"], "online-softmax merges: " + ", ".join(found)


def _merge_line() -> int:
    tree = _tree(PACKAGE / "estimators" / "engine.py")
    return next(fn.lineno for fn in _functions(tree) if fn.name == "running_max")


# ----------------------------------------------------------------------------- the checker itself
# The rules above pass vacuously if the checker is wrong; these pin it on known snippets.

SNIPPET = '''
import torch
from lemmse_lite import data


@decorator
def documented(x):
    """Line 1 of the docstring.

    Line 3.
    """
    y = x
    return y


def lazy():
    from . import estimators
    from .metrics import psnr
    import lemmse_lite.data
    import math
    return estimators, psnr, math


def uses_global():
    global STATE
    count = 0
    def inner():
        nonlocal count
        count += 1
    return inner
'''


def test_checker_counts_lines_and_finds_violations():
    tree = ast.parse(SNIPPET)
    fns = {fn.name: fn for fn in _functions(tree)}
    assert function_length(fns["documented"]) == 3  # def + 2 body lines; decorator and 4 docstring lines out
    assert function_length(fns["lazy"]) == 6
    assert [name for _, name in lazy_package_imports(tree)] == ["lazy"] * 3  # math and top level are fine
    assert global_statements(tree) == [(25, "global"), (28, "nonlocal")]
    assert long_functions(tree, limit=5) == [(16, "lazy", 6), (24, "uses_global", 7)]
    assert long_functions(tree, limit=7) == []


def test_checker_length_of_a_61_line_function():
    body = "\n".join(f"    a{i} = {i}" for i in range(59))
    src = f'def f():\n    """Doc."""\n{body}\n    return 0\n'
    (fn,) = _functions(ast.parse(src))
    assert function_length(fn) == 61 and long_functions(ast.parse(src)) == [(1, "f", 61)]
    src60 = src.replace("    a58 = 58\n", "")
    assert long_functions(ast.parse(src60)) == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_parses(path):
    assert isinstance(_tree(path), ast.Module)


SIDE_EFFECTS = """
import os, socket, warnings, torch
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
socket.setdefaulttimeout(3)
torch.manual_seed(0)
os.replace("a", "b")
g = torch.Generator().manual_seed(0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(1)
"""

MERGES = """
def merge(m_old, blk):
    m_new = torch.maximum(m_old, blk)
    return torch.exp(m_old - m_new)

def chained(s, m_old, blk):
    m_new = torch.maximum(m_old, blk)
    return s.sub(m_new).exp_()

def softmax_alone(s):
    return torch.exp(s - s.amax())
"""


def test_checker_finds_side_effects_and_merges():
    bad = side_effects(ast.parse(SIDE_EFFECTS), "x.py")
    assert [what for _, what in bad] == ["warnings.filterwarnings", "torch.set_num_threads",
                                         "socket.setdefaulttimeout", "torch.manual_seed", "os.replace"]
    assert side_effects(ast.parse(SIDE_EFFECTS), "files.py")[-1][1] == "torch.manual_seed"  # os.replace allowed there
    assert [name for _, name in online_softmax_merges(ast.parse(MERGES))] == ["merge", "chained"]


# ----------------------------------------------------------------------------- the layout

FOLDERS = {"estimators", "networks", "experiments", "course"}
MAY_IMPORT = {"": set(), "estimators": {""}, "networks": {""}, "course": {"", "estimators"},
              "experiments": {"", "estimators", "networks"}}
ENTRY_POINTS = {"cli.py", "__main__.py"}


def _folder(path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imported_folders(tree, here: tuple) -> set:
    """The folders (``""``: the top level) of the package modules imported in ``tree``, the code
    of a module in the folder ``here`` (``()`` or ``("estimators",)``), read with ``ast`` by
    resolving each relative or absolute package import."""
    found = set()
    for node in ast.walk(tree):
        if not _is_package_import(node):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".")[1:] for alias in node.names]
        else:
            base = list(here[:len(here) - node.level + 1]) if node.level else []
            mod = [m for m in (node.module or "").split(".") if m]
            mod = mod if node.level else mod[1:]
            targets = [base + mod] if mod or base else [[a.name] for a in node.names]
        found.update(t[0] if t and t[0] in FOLDERS else "" for t in targets)
    return found


def test_folders_and_unique_module_names():
    folders = {p.parent.relative_to(PACKAGE).as_posix() for p in _modules()} - {"."}
    assert folders == FOLDERS, f"package folders: {sorted(folders)}"
    names = [p.parent.name if p.name == "__init__.py" else p.stem for p in _modules()]
    assert len(names) == len(set(names)), f"module names used twice: {sorted({n for n in names if names.count(n) > 1})}"


def test_imports_run_one_way():
    bad = [f"{p.relative_to(PACKAGE)} imports {folder or 'the top level'}" for p in _modules()
           if p.name not in ENTRY_POINTS or _folder(p)
           for folder in sorted(imported_folders(_tree(p), p.relative_to(PACKAGE).parent.parts)
                                - MAY_IMPORT[_folder(p)] - {_folder(p)})]
    assert not bad, "imports against the layering: " + ", ".join(bad)


def test_layering_checker_resolves_relative_and_absolute_imports():
    tree = ast.parse("from .. import data, estimators\nfrom ..networks.zoo import f\nfrom . import pages\n"
                     "import lemmse_lite.experiments.compare\nfrom lemmse_lite import plotting\n")
    assert imported_folders(tree, ("course",)) == {"", "estimators", "networks", "course", "experiments"}
    assert imported_folders(ast.parse("from . import store\nfrom .estimators import engine\n"), ()) == {"", "estimators"}
