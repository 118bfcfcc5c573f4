"""The one on-disk store of the package: atomic writes and results cached under a key that
fingerprints everything that shaped them.

* :func:`cached` -- ``compute()`` once per key, later calls read ``<cache>/<kind>/<key>.pt``;
* :func:`cache_key` -- sha256 of the settings, the package version and :func:`source_hash` of
  every module the computation can run (:func:`source_closure`: the modules named, and every
  package module they import, transitively), so an edited source never serves a stale result;
* :func:`tensor_digest` -- the one digest of a tensor (shape and float32 bytes);
* :func:`read` / :func:`write` -- a payload stored with its key; a torn, foreign or mismatched file
  reads as absent and is recomputed.

Cache folder: ``$LEMMSE_CACHE`` if set, else ``.lemmse_cache/`` in the repository root
(git-ignored), or in the working directory for an installed package.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
from functools import cache, lru_cache
from pathlib import Path

import torch

from . import __version__
from .files import atomic_write

__all__ = ["CACHE_ENV", "CACHE_FORMAT", "PACKAGE_DIR", "cache_dir", "cache_key", "cached", "read",
           "save", "source_closure", "source_hash", "tensor_digest", "write"]

CACHE_ENV = "LEMMSE_CACHE"
CACHE_FORMAT = "lemmse_lite.experiments/1"
PACKAGE_DIR = Path(__file__).resolve().parent


def cache_dir(path=None) -> Path:
    """The cache folder: ``path``, else ``$LEMMSE_CACHE``, else ``.lemmse_cache`` in the repository
    root (where ``pyproject.toml`` is) or the working directory."""
    if path is None:
        path = os.environ.get(CACHE_ENV, "").strip() or None
    if path is None:
        root = PACKAGE_DIR.parent
        path = (root if (root / "pyproject.toml").exists() else Path.cwd()) / ".lemmse_cache"
    return Path(path).expanduser()


def _package_imports(path: Path) -> set:
    """Names of the package modules ``path`` imports (``from . import a``, ``from .b import c``,
    ``import lemmse_lite.d``), read with ``ast``; a name that is not a module file is ignored."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("lemmse_lite")):
            module = (node.module or "").removeprefix("lemmse_lite").lstrip(".")
            found.update([module.split(".")[0]] if module else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lemmse_lite."))
    return {name for name in found if (path.parent / f"{name}.py").is_file()}


@cache
def _closure(roots: tuple, folder: str, stamp: tuple) -> tuple:
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_package_imports(Path(folder) / f"{name}.py") - seen)
    return tuple(sorted(seen | {"__init__"}))


def source_closure(roots, folder=PACKAGE_DIR) -> tuple:
    """The package modules (names without ``.py``, sorted) that code starting in the modules
    ``roots`` can run: the roots, every package module they import, transitively, and
    ``__init__``. ``folder``: where the sources are (the package by default)."""
    folder = Path(folder)
    roots = tuple(sorted({roots} if isinstance(roots, str) else set(roots)))
    missing = [r for r in roots if not (folder / f"{r}.py").is_file()]
    if missing:
        raise ValueError(f"roots must name modules of {folder}, got {', '.join(missing)}")
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.py")))
    return _closure(roots, str(folder), stamp)


def source_hash(roots, folder=PACKAGE_DIR) -> str:
    """sha256 of the code (:func:`code_text`) of :func:`source_closure` ``(roots)``: a change of
    code changes it, a docstring or comment does not."""
    h = hashlib.sha256()
    for name in source_closure(roots, folder):
        h.update(name.encode())
        h.update(code_text(Path(folder) / f"{name}.py").encode())
    return h.hexdigest()


def code_text(path: Path) -> str:
    """The code of a module without its docstrings and comments (``ast.dump`` of its tree, the
    docstrings of the module, classes and functions removed): what runs, so rewording a
    docstring or a comment keys no result anew, while any change to a statement does."""
    path = Path(path)
    return _code_text(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=256)
def _code_text(path: str, mtime_ns: int) -> str:  # keyed by mtime: an edited file is read again
    tree = ast.parse(Path(path).read_text(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def cache_key(settings: dict, roots, folder=PACKAGE_DIR) -> str:
    """Key of one cached result: sha256 of the JSON of ``settings``, the package version and
    :func:`source_hash` of ``roots``. ``settings`` must be JSON-serialisable."""
    blob = json.dumps({"settings": settings, "version": __version__, "code": source_hash(roots, folder)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's float32 bytes and shape (a data set, a measurement), 32 hex digits."""
    arr = t.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(str(tuple(arr.shape)).encode() + arr.numpy().tobytes()).hexdigest()[:32]


def read(path: Path, key: str):
    """The payload stored at ``path`` if it is complete and was written under ``key``, else None."""
    if not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):  # torn or foreign
        return None
    if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT or state.get("key") != key:
        return None
    return state["payload"]


def save(path, obj) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`lemmse_lite.files.atomic_write`, the
    package's one atomic writer): a crash leaves the old file or the new one, never a torn one."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())


def write(path: Path, key: str, payload) -> None:
    """Atomic write of ``payload`` under ``key`` (:func:`save`)."""
    save(path, {"format": CACHE_FORMAT, "key": key, "payload": payload})


def cached(kind: str, settings: dict, compute, cache=None, roots=("experiments",)):
    """``compute()`` once per key (:func:`cache_key` of ``settings`` and the modules ``roots`` can
    run); later calls read ``<cache>/<kind>/<key>.pt``."""
    key = cache_key(settings, roots)
    path = cache_dir(cache) / kind / f"{key[:32]}.pt"
    payload = read(path, key)
    if payload is None:
        payload = compute()
        write(path, key, payload)
    return payload
