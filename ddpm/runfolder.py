"""A run folder: the checkpoints, loss log and sample grids of one training run.

- :class:`RunFolder` checks the folder before the first step (a folder, not a file; writable; free
  space for one checkpoint; nothing in it but a run's own files, and for a fresh run not even
  those), takes a lock on ``.lock`` (``fcntl.flock``) so a second run writing into the same folder
  is refused while the first is alive (the lock goes with the process, also on kill -9), and
  removes the temporary files a killed write of its own left behind (``.NAME.tmp-PID``; no other
  file is ever deleted or overwritten).
- ``loss.csv``: one row per log interval, ``step,loss,lr,seconds,images_per_second``; a resumed run
  keeps the rows up to its checkpoint's step and appends.
- ``samples.png``: a grid of samples from the EMA weights, replaced atomically.
- Every OS error while writing is a :class:`RunFolderError` (an ``OSError`` and a ``ValueError``)
  whose message is one line naming the path.
"""

from __future__ import annotations

import csv
import errno
import re
import io
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from ._io import atomic_write_bytes

LOCK_NAME = ".lock"
LOSS_LOG = "loss.csv"
SAMPLES = "samples.png"
LOG_FIELDS = ("step", "loss", "lr", "seconds", "images_per_second")


class RunFolderError(OSError, ValueError):
    """A one-line error about a file or folder of the run, naming it."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "run folder error"


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def os_error(path, action: str, e: OSError) -> RunFolderError:
    """``RunFolderError("cannot <action> <path>: <reason>")``."""
    err = RunFolderError(f"cannot {action} {path}: {_why(e)}")
    err.errno = e.errno
    return err


_CKPT = re.compile(r"^ckpt-\d{8,}\.pt$")
_OWN_TMP = re.compile(r"^\.(ckpt-\d{8,}\.pt|loss\.csv|samples\.png|preflight)\.tmp-\d+$")


def is_temporary(name: str) -> bool:
    """Names of the temporary files a run's own atomic writes use (``.ckpt-00000010.pt.tmp-PID``,
    ``.loss.csv.tmp-PID``, ...): only these are ever removed."""
    return bool(_OWN_TMP.match(name))


def is_run_file(name: str) -> bool:
    """Names a run writes into its folder: checkpoints, ``loss.csv``, ``samples.png``, the lock and
    its own temporary files."""
    return bool(_CKPT.match(name)) or name in (LOSS_LOG, SAMPLES, LOCK_NAME) or is_temporary(name)


def plottable(item_shape) -> bool:
    """Whether samples with items of ``item_shape`` can be drawn as a sample grid: images
    ``(C, H, W)`` with C = 1 or 3, or 2-D points."""
    item = tuple(item_shape)
    return (len(item) == 3 and item[0] in (1, 3)) or item == (2,)


def check_contents(path, *, fresh: bool) -> None:
    """A run writes only into a folder of its own: a folder holding files a run did not write (or,
    for a fresh run, any run's files but the lock and temporary files) is refused with a
    :class:`RunFolderError`; nothing in it is ever deleted or overwritten. A missing folder passes."""
    path = Path(path)
    if not path.is_dir():
        return
    names = sorted(q.name for q in path.iterdir())
    foreign = [n for n in names if not is_run_file(n)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunFolderError(f"{path} holds files a training run did not write ({shown}); train into a new or empty folder")
    if fresh:
        earlier = [n for n in names if n != LOCK_NAME and not is_temporary(n)]
        if earlier:
            what = "checkpoints" if any(_CKPT.match(n) for n in earlier) else ", ".join(earlier)
            raise RunFolderError(f"{path} already holds {what} of an earlier run; resume it (resume=True, --resume) "
                                 f"or train into a new or empty folder")


class RunFolder:
    """The folder of one run, locked while the run is alive. Use as a context manager or call
    :meth:`close`."""

    def __init__(self, path, *, need_bytes: int = 0, fresh: bool = False):
        self.path = Path(path).expanduser()
        self._lock_fd = None
        self.cleaned: list[Path] = []
        self._open(need_bytes, fresh)

    def _open(self, need_bytes: int, fresh: bool) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"cannot use {p} as the run folder: it is a file, not a folder")
        if p.is_dir():
            check_contents(p, fresh=fresh)  # before anything is written into it
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(p, "create the run folder", e) from None
        lock = p / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise os_error(p, "write into the run folder", e) from None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            fcntl = None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderError(f"{p} is in use by another training run (its lock {lock} is held); "
                                     f"wait for it to end or choose another folder") from None
            raise os_error(lock, "lock", e) from None
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        # Temporary files of a killed write: nobody else writes here now (we hold the lock).
        for q in p.iterdir():
            if q.is_file() and is_temporary(q.name):
                try:
                    q.unlink()
                    self.cleaned.append(q)
                except OSError:
                    pass
        probe = p / f".preflight.tmp-{os.getpid()}"  # a small write: the folder takes files
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise os_error(p, "write into the run folder", e) from None
        finally:
            try:
                probe.unlink()
            except OSError:
                pass
        if need_bytes:
            free = shutil.disk_usage(p).free
            if free < need_bytes:
                raise RunFolderError(f"cannot write checkpoints into {p}: {free / 2**20:.0f} MiB free, a checkpoint "
                                     f"needs about {need_bytes / 2**20:.0f} MiB")

    def _replace(self, name: str, data: bytes) -> Path:
        """Write the run file ``name`` atomically; an OS error becomes a :class:`RunFolderError` naming it."""
        path = self.path / name
        try:
            return atomic_write_bytes(path, data)
        except OSError as e:
            raise os_error(path, "write", e) from None

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- loss log -------------------------------------------------------------------------------
    def start_log(self, resumed_step: int) -> None:
        """Keep ``loss.csv``'s rows up to ``resumed_step`` (0: start a new log) and write the header."""
        path = self.path / LOSS_LOG
        rows = []
        if resumed_step > 0 and path.is_file():
            try:
                with open(path, newline="") as f:
                    for row in csv.DictReader(f):
                        try:
                            if int(row["step"]) <= resumed_step:
                                rows.append(row)
                        except (KeyError, TypeError, ValueError):
                            pass  # a line cut short by a kill
            except OSError as e:
                raise os_error(path, "read", e) from None
        buf = io.StringIO()
        w = csv.DictWriter(buf, LOG_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        self._replace(LOSS_LOG, buf.getvalue().encode())

    def log(self, step: int, loss: float, lr: float, seconds: float, images_per_second: float) -> None:
        """Append one row to ``loss.csv``."""
        path = self.path / LOSS_LOG
        line = f"{step},{loss:.6g},{lr:.6g},{seconds:.3f},{images_per_second:.1f}\n"
        try:
            with open(path, "a") as f:
                f.write(line)
        except OSError as e:
            raise os_error(path, "write", e) from None

    # -- sample grid ----------------------------------------------------------------------------
    def write_samples(self, x: Tensor, step: int) -> Path:
        """Write ``samples.png`` (replaced atomically): images ``(n, C, H, W)`` in [-1, 1] as a grid,
        or 2-D points ``(n, 2)`` as a scatter plot."""
        data = grid_png(x, title=f"step {step}")
        return self._replace(SAMPLES, data)


def grid_png(x: Tensor, title: str = "") -> bytes:
    """PNG bytes of samples: a grid for images ``(n, C, H, W)`` in [-1, 1] (C = 1 or 3), a scatter
    plot for points ``(n, 2)``. Non-finite samples are an error, not a picture."""
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"the samples at {title or 'this step'} contain NaN or inf: the model has diverged")
    if x.dim() == 4 and x.shape[1] in (1, 3):
        from PIL import Image

        n, c, h, w = x.shape
        cols = int(n ** 0.5 + 0.999)
        rows = (n + cols - 1) // cols
        grid = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)  # white 1-pixel gutters
        img = ((x.clamp(-1, 1) + 1) / 2)
        for i in range(n):
            r, q = divmod(i, cols)
            grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = img[i]
        arr = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, C)
        im = Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")
        scale = max(1, 256 // im.width)
        if scale > 1:
            im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()
    if x.dim() == 2 and x.shape[1] == 2:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 4), dpi=100)
        ax = fig.add_subplot()
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=3, alpha=0.5)
        ax.set_aspect("equal")
        ax.set_title(f"samples, {title}" if title else "samples")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    raise ValueError(f"sample grids need images (n, C, H, W) with C = 1 or 3, or points (n, 2); got shape {tuple(x.shape)}")
