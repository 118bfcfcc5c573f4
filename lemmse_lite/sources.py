"""Which code a cached result depends on, and its fingerprint.

* :func:`source_closure` -- the package modules a computation starting in ``roots`` can run: the
  roots and every package module they import, transitively, with the package ``__init__`` files
  that Python runs on the way (those that hold code);
* :func:`source_hash` -- sha256 of the code (:func:`code_text`) of that closure;
* :func:`code_text` -- a module's code without docstrings and comments, its package imports written
  in one canonical form, so that neither rewording a docstring nor moving a module to another
  folder of the package changes a key, while any change to a statement does.

A module is named by its file stem (``estimators/engine.py``: ``engine``), a package's
``__init__.py`` by the package (``estimators``), the top one ``__init__``; no two modules of the
package may share a name (:func:`module_index` refuses it).
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache, lru_cache
from pathlib import Path

__all__ = ["PACKAGE_DIR", "code_text", "module_index", "source_closure", "source_hash"]

PACKAGE_DIR = Path(__file__).resolve().parent
TOP = "__init__"


def _stamp(folder: Path) -> tuple:
    """The package's files and their modification times: a new, moved or edited file re-reads."""
    return tuple(
        (str(p), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*.py"))
        if "__pycache__" not in p.parts
    )


@cache
def _layout(folder: str, stamp: tuple) -> tuple:
    """``(paths, names)``: ``paths`` {name: file}, ``names`` {dotted parts below ``folder``: name}."""
    paths, names = {}, {}
    for file, _ in stamp:
        parts = Path(file).relative_to(folder).with_suffix("").parts
        dotted = parts[:-1] if parts[-1] == "__init__" else parts
        name = dotted[-1] if dotted else TOP
        if name in paths:
            raise ValueError(f"two modules of {folder} are named {name}: {paths[name]} and {file}")
        paths[name], names[dotted] = Path(file), name
    return paths, names


def module_index(folder=PACKAGE_DIR) -> dict:
    """{module name: file} of every module below ``folder`` (names as in the module docstring)."""
    folder = Path(folder).resolve()
    return dict(_layout(str(folder), _stamp(folder))[0])


def _dotted(path: Path, folder: Path) -> tuple:
    """The dotted parts of the module ``path`` below ``folder`` (``()`` for the top ``__init__``)."""
    parts = path.relative_to(folder).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _package_of(path: Path, folder: Path) -> tuple:
    """The dotted parts of the package that the relative imports of ``path`` start from."""
    dotted = _dotted(path, folder)
    return dotted if path.name == "__init__.py" else dotted[:-1]


def _resolve(node, package: tuple, names: dict):
    """For a package import ``node`` in a module of ``package`` (dotted parts): ``(target,
    modules)``, the dotted parts of the module imported from and the dotted parts of each name imported that is
    itself a module (``from . import a``); None for an import from outside the package."""
    if isinstance(node, ast.Import):
        mods = [
            tuple(a.name.split(".")[1:])
            for a in node.names
            if a.name.split(".")[0] == "lemmse_lite"
        ]
        return (None, mods) if mods and all(m in names for m in mods) else None
    module = node.module or ""
    if node.level:
        if node.level - 1 > len(package):
            return None
        base = package[: len(package) - node.level + 1]
    elif module.split(".")[0] == "lemmse_lite":
        base, module = (), module.removeprefix("lemmse_lite").lstrip(".")
    else:
        return None
    target = base + (tuple(module.split(".")) if module else ())
    if target not in names:
        return None
    return target, [target + (a.name,) for a in node.names if target + (a.name,) in names]


def _runs(dotted: tuple, names: dict) -> list:
    """The modules Python runs to import ``dotted``: each package on the way, then the module."""
    return [names[dotted[:k]] for k in range(len(dotted) + 1) if dotted[:k] in names]


def _package_imports(path: Path, folder: Path, names: dict) -> set:
    """Names of the package modules that importing ``path`` runs (read with ``ast``)."""
    package = _package_of(path, folder)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and (
            hit := _resolve(node, package, names)
        ):
            target, modules = hit
            for dotted in ([target] if target is not None else []) + modules:
                found.update(_runs(dotted, names))
    return found


@cache
def _closure(roots: tuple, folder: str, stamp: tuple) -> tuple:
    paths, names = _layout(folder, stamp)
    todo = [m for r in roots for m in _runs(_dotted(paths[r], Path(folder)), names)]
    seen = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_package_imports(paths[name], Path(folder), names) - seen)
    # a package __init__ with no code (a docstring) runs nothing: leaving it out keeps a key when
    # a module moves between folders
    kept = {
        n
        for n in seen
        if n in roots or n == TOP or paths[n].name != "__init__.py" or _has_code(paths[n])
    }
    return tuple(sorted(kept | {TOP}))


def _has_code(path: Path) -> bool:
    body = ast.parse(path.read_text(), filename=str(path)).body
    return bool(body[1:] if body and _is_docstring(body[0]) else body)


def source_closure(roots, folder=PACKAGE_DIR) -> tuple:
    """The package modules (names as in the module docstring, sorted) that code starting in the
    modules ``roots`` can run: the roots, every package module they import, transitively, the
    package ``__init__`` files on the way that hold code, and ``__init__``. ``folder``: where the
    sources are (the package by default)."""
    folder = Path(folder).resolve()
    roots = tuple(sorted({roots} if isinstance(roots, str) else set(roots)))
    stamp = _stamp(folder)
    paths = _layout(str(folder), stamp)[0]
    missing = [r for r in roots if r not in paths]
    if missing:
        raise ValueError(f"roots must name modules of {folder}, got {', '.join(missing)}")
    return _closure(roots, str(folder), stamp)


def source_hash(roots, folder=PACKAGE_DIR) -> str:
    """sha256 of the names and code (:func:`code_text`) of :func:`source_closure` ``(roots)``: a
    change of code changes it; a docstring, a comment or a module's folder does not."""
    folder = Path(folder).resolve()
    closure, stamp = source_closure(roots, folder), _stamp(folder)
    paths = _layout(str(folder), stamp)[0]
    h = hashlib.sha256()
    for name in closure:
        h.update(name.encode())
        h.update(
            _code_text(
                str(paths[name]), str(folder), paths[name].stat().st_mtime_ns, stamp
            ).encode()
        )
    return h.hexdigest()


def code_text(path, folder=PACKAGE_DIR) -> str:
    """The code of a module of ``folder`` without its docstrings and comments (``ast.dump`` of its
    tree; the docstrings of the module, classes and functions removed), each package import
    written canonically: one imported name per statement, relative to a flat package
    (``from ..estimators.engine import a`` reads ``from .engine import a``), each run of
    consecutive package imports sorted. What runs, wherever the module sits."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    stamp = _stamp(folder)
    return _code_text(str(path), str(folder), path.stat().st_mtime_ns, stamp)


def _is_docstring(node) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


@lru_cache(maxsize=256)
def _code_text(
    path: str, folder: str, mtime_ns: int, stamp: tuple
) -> str:  # an edit or a move re-reads
    names = _layout(folder, stamp)[1]
    package = _package_of(Path(path), Path(folder))
    tree = ast.parse(Path(path).read_text(), filename=path)
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and _is_docstring(node.body[0])
        ):
            node.body = node.body[1:] or [ast.Pass()]
        for field, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, field, _canonical(value, package, names))
    return ast.dump(tree, include_attributes=False)


def _canonical(statements: list, package: tuple, names: dict) -> list:
    """``statements`` with each package import split into one canonical statement per name and each
    run of consecutive package imports sorted."""
    out, run = [], []
    for node in statements + [None]:
        hit = (
            _resolve(node, package, names)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            else None
        )
        if hit:
            run += _canonical_import(node, hit, names)
            continue
        out += sorted(run, key=ast.dump)
        run = []
        if node is not None:
            out.append(node)
    return out


def _canonical_import(node, hit, names: dict) -> list:
    target, modules = hit
    if isinstance(node, ast.Import):
        return [
            ast.Import(names=[ast.alias(names[m], a.asname)]) for m, a in zip(modules, node.names)
        ]
    as_module = {m[-1] for m in modules}
    return [
        ast.ImportFrom(
            module=None if a.name in as_module else names[target],
            names=[ast.alias(a.name, a.asname)],
            level=1,
        )
        for a in node.names
    ]
