"""The package's one writer of result files: :func:`atomic_write` (text or bytes).

A reader of a result file — a resumed run, a chapter, the README generator — sees the old file or
the new one, never a torn one: the bytes go to a temporary file in the same folder, are flushed to
disk (``fsync``) and renamed over the target (``os.replace``, atomic on POSIX and Windows within
one file system). Trained networks and cached tensors are written the same way by
:func:`lemmse_lite.networks.training.save_checkpoint` (through :mod:`lemmse_lite.store`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path, content: str | bytes) -> Path:
    """Write ``content`` (str: UTF-8 text; bytes as they are) to ``path`` atomically, creating its
    folder; returns the path. The temporary name carries the process and thread ids, so concurrent
    writers of one file never share a temporary."""
    if not isinstance(content, (str, bytes)):
        raise TypeError(f"content must be str or bytes, got {type(content).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
