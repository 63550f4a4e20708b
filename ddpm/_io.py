"""Atomic file writes shared by checkpoints, figures and sample arrays.

A file is written to a temporary name in its own folder, flushed and fsync'ed, then renamed over
the target with ``os.replace`` (atomic on POSIX): a kill or a full disk at any moment leaves the
old file or the new one, never half of one, and no temporary file behind.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable


def _fsync_dir(folder: Path) -> None:
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


def atomic_write(path, write: Callable[[object], None]) -> Path:
    """Call ``write(f)`` on a binary file object for a temporary file beside ``path``, then move it
    onto ``path``. The parent folder is created. Any error removes the temporary file and re-raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None or e.filename == str(path):
            raise
        # A full disk or a permission error names the file the user asked for, not the temporary one.
        raise OSError(e.errno, e.strerror, str(path)) from None
    except RuntimeError as e:  # torch.save's writer on a full disk: "[enforce fail at inline_container.cc...]"
        first = (str(e).strip().splitlines() or ["write failed"])[0][:160]
        raise OSError(errno.EIO, f"write failed ({first})", str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))
