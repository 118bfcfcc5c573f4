"""The one on-disk store of the package: atomic writes and results cached under a key that
fingerprints everything that shaped them.

* :func:`cached` -- ``compute()`` once per key, later calls read ``<cache>/<kind>/<key>.pt``;
* :func:`cache_key` -- sha256 of the settings, the package version and
  :func:`lemmse_lite.sources.source_hash` of every module the computation can run (the modules
  named, and every package module they import, transitively), so an edited source never serves a
  stale result;
* :func:`tensor_digest` -- the one digest of a tensor (shape and float32 bytes);
* :func:`read` / :func:`write` -- a payload stored with its key; a torn, foreign or mismatched file
  reads as absent and is recomputed.

Cache folder: ``$LEMMSE_CACHE`` if set, else ``.lemmse_cache/`` in the repository root
(git-ignored), or in the working directory for an installed package.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import torch

from . import __version__
from .files import atomic_write
from .sources import PACKAGE_DIR, code_text, source_closure, source_hash

__all__ = ["CACHE_ENV", "CACHE_FORMAT", "PACKAGE_DIR", "cache_dir", "cache_key", "cached", "code_text", "read",
           "save", "source_closure", "source_hash", "tensor_digest", "write"]

CACHE_ENV = "LEMMSE_CACHE"
CACHE_FORMAT = "lemmse_lite.experiments/1"


def cache_dir(path=None) -> Path:
    """The cache folder: ``path``, else ``$LEMMSE_CACHE``, else ``.lemmse_cache`` in the repository
    root (where ``pyproject.toml`` is) or the working directory."""
    if path is None:
        path = os.environ.get(CACHE_ENV, "").strip() or None
    if path is None:
        root = PACKAGE_DIR.parent
        path = (root if (root / "pyproject.toml").exists() else Path.cwd()) / ".lemmse_cache"
    return Path(path).expanduser()


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
