"""The run folder: checked before the first step, locked to one run, stale temporary files removed,
a loss log and sample grids written atomically, OS errors as one-line messages naming the path."""

import errno
import os

import pytest
import torch
from torch import nn

from ddpm import MLP, MLPConfig, Schedule, TrainConfig, load_dataset, train
from ddpm.checkpoint import list_checkpoints
from ddpm.runfolder import RunFolder, RunFolderError, grid_png
from ddpm.train import Interrupted


pytestmark = pytest.mark.threads(1)  # small models: one thread is the fastest here


class Counting(MLP):
    """An eps-model counting its calls (the pre-flight check is call 1); raises `exc` at call `at`.
    (A subclass of the package's MLP: a checkpoint rebuilds only the package's own models.)"""

    def __init__(self, at=None, exc=KeyboardInterrupt):
        torch.manual_seed(0)
        super().__init__(MLPConfig(hidden=16, layers=1))
        self.calls, self.at, self.exc = 0, at, exc

    def forward(self, x, t):
        self.calls += 1
        if self.at is not None and self.calls >= self.at:
            raise self.exc()
        return super().forward(x, t)


def moons(n=200):
    return load_dataset("moons", n=n, generator=torch.Generator().manual_seed(0))


S = Schedule.linear(50)


def test_an_out_dir_that_is_a_file_is_refused_before_the_first_step(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    m = Counting()
    with pytest.raises(RunFolderError, match=r"file.*is a file, not a folder") as e:
        train(m, S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=f, progress=False)
    assert m.calls == 1 and "\n" not in str(e.value)  # only the pre-flight forward pass ran
    with pytest.raises(RunFolderError, match="cannot create the run folder"):
        train(Counting(), S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=f / "sub", progress=False)


def test_data_that_do_not_fit_the_model_are_refused_before_the_first_step(tmp_path):
    images = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="cannot take this data"):
        train(MLP(MLPConfig(hidden=8, layers=1)), S, images, TrainConfig(steps=5, batch_size=2), out_dir=tmp_path, progress=False)
    assert not list_checkpoints(tmp_path)

    class NoConfig(nn.Module):
        def forward(self, x, t):
            return x

    with pytest.raises(ValueError, match="dataclass .config"):
        train(NoConfig(), S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="meta"):
        train(Counting(), S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=tmp_path, progress=False, meta={"x": object()})


def test_a_second_run_into_a_locked_folder_is_refused_and_stale_temporary_files_are_removed(tmp_path):
    stale = tmp_path / ".ckpt-00000010.pt.tmp-99999"
    stale.write_bytes(b"half a checkpoint")
    with RunFolder(tmp_path) as rf:  # a run holding the folder
        assert stale in rf.cleaned and not stale.exists()
        with pytest.raises(RunFolderError, match="in use by another training run"):
            train(Counting(), S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=tmp_path, progress=False)
    r = train(Counting(), S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=tmp_path, progress=False)  # lock released
    assert r.checkpoint is not None and r.checkpoint.is_file()


def test_a_full_disk_while_saving_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch):
    import ddpm.checkpoint

    real = ddpm.checkpoint.atomic_write

    def full(path, write):  # the disk fills up when the first checkpoint is written
        if "ckpt-" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, write)

    monkeypatch.setattr(ddpm.checkpoint, "atomic_write", full)
    with pytest.raises(RunFolderError) as e:
        train(Counting(), S, moons(), TrainConfig(steps=5, batch_size=8, checkpoint_every=3), out_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "ckpt-00000003.pt" in msg and "No space left" in msg
    assert isinstance(e.value, OSError) and isinstance(e.value, ValueError) and e.value.errno == errno.ENOSPC


def test_ctrl_c_says_whether_a_checkpoint_is_kept(tmp_path):
    with pytest.raises(Interrupted, match="no checkpoint had been written yet") as e:
        train(Counting(at=4), S, moons(), TrainConfig(steps=50, batch_size=8, checkpoint_every=10), out_dir=tmp_path / "a", progress=False)
    assert e.value.checkpoint is None and isinstance(e.value, KeyboardInterrupt)
    with pytest.raises(Interrupted, match=r"ckpt-00000010\.pt, is kept") as e:
        train(Counting(at=15), S, moons(), TrainConfig(steps=50, batch_size=8, checkpoint_every=10), out_dir=tmp_path / "b", progress=False)
    assert e.value.checkpoint.name == "ckpt-00000010.pt" and e.value.step == 14  # call 15 is step 14


def test_loss_log_and_sample_grids(tmp_path):
    cfg = TrainConfig(steps=20, batch_size=8, log_every=5, sample_every=10, checkpoint_every=10)
    r = train(Counting(), S, moons(), cfg, out_dir=tmp_path, progress=False)
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,seconds,images_per_second"
    cells = [row.split(",") for row in rows[1:]]
    assert [int(c[0]) for c in cells] == [5, 10, 15, 20]
    for c, k in zip(cells, (5, 10, 15, 20)):
        assert float(c[1]) == pytest.approx(sum(r.losses[k - 5:k]) / 5, rel=1e-4)
        assert float(c[2]) == pytest.approx(cfg.lr * min(1, k / cfg.warmup), rel=1e-4)
        assert float(c[4]) > 0
    png = (tmp_path / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # Resume to 30: rows up to the checkpoint kept, the new ones appended.
    train(Counting(), S, moons(), TrainConfig(steps=30, batch_size=8, log_every=5, sample_every=10, checkpoint_every=10),
          out_dir=tmp_path, progress=False, resume=True)
    assert [int(x.split(",")[0]) for x in (tmp_path / "loss.csv").read_text().splitlines()[1:]] == [5, 10, 15, 20, 25, 30]


def test_image_grids_and_non_finite_samples():
    from PIL import Image
    import io

    x = torch.rand(6, 1, 8, 8) * 2 - 1
    im = Image.open(io.BytesIO(grid_png(x)))
    assert im.mode == "L" and im.width >= 3 * 9 + 1
    im = Image.open(io.BytesIO(grid_png(torch.zeros(4, 3, 4, 4))))
    assert im.mode == "RGB"
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        grid_png(torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="sample grids need"):
        grid_png(torch.zeros(4, 5))


def test_the_progress_bar_moves_from_the_first_step(monkeypatch):
    import importlib

    seen = []

    class Bar:
        def __init__(self, total, initial=0, **kw):
            self.n = initial

        def update(self, k):
            self.n += k
            seen.append(("n", self.n))

        def set_postfix(self, **kw):
            seen.append(("loss", self.n))

        def close(self):
            pass

    monkeypatch.setattr(importlib.import_module("ddpm.train"), "tqdm", Bar)
    train(Counting(), S, moons(), TrainConfig(steps=6, batch_size=8, log_every=3), progress=True)
    assert [n for k, n in seen if k == "n"] == [1, 2, 3, 4, 5, 6]
    assert [n for k, n in seen if k == "loss"] == [3, 6]  # the loss at the read-backs only


def test_too_little_free_space_for_a_checkpoint_is_refused_before_the_first_step(tmp_path, monkeypatch):
    import collections

    import ddpm.runfolder

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(ddpm.runfolder.shutil, "disk_usage", lambda p: usage(100, 90, 10))
    m = Counting()
    with pytest.raises(RunFolderError, match=r"MiB free, a checkpoint needs about"):
        train(m, S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=tmp_path, progress=False)
    assert m.calls == 1


def test_a_folder_holding_files_the_run_did_not_write_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.tmp").write_text("mine")
    (tmp_path / "loss.csv").write_text("my table")
    m = Counting()
    with pytest.raises(RunFolderError, match="notes.tmp") as e:
        train(m, S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=tmp_path, progress=False)
    assert "\n" not in str(e.value) and m.calls == 1
    assert (tmp_path / "notes.tmp").read_text() == "mine" and (tmp_path / "loss.csv").read_text() == "my table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.csv", "notes.tmp"]  # not even a lock file
    (tmp_path / "notes.tmp").unlink()  # a fresh run does not overwrite another run's loss.csv either
    with pytest.raises(RunFolderError, match="loss.csv of an earlier run"):
        train(Counting(), S, moons(), TrainConfig(steps=5, batch_size=8), out_dir=tmp_path, progress=False)
    assert (tmp_path / "loss.csv").read_text() == "my table"


def test_sigterm_on_one_process_saves_a_checkpoint_and_says_so(tmp_path):
    import signal

    class Term(Counting):
        def forward(self, x, t):
            if self.calls == 7:  # call 8 is step 7 (call 1 is the pre-flight check)
                os.kill(os.getpid(), signal.SIGTERM)
            return super().forward(x, t)

    with pytest.raises(Interrupted, match="SIGTERM at step 7; saved .*ckpt-00000007.pt") as e:
        train(Term(), S, moons(), TrainConfig(steps=50, batch_size=8, checkpoint_every=20), out_dir=tmp_path, progress=False)
    assert e.value.signal == "SIGTERM" and e.value.step == 7 and e.value.checkpoint.is_file()
    r = train(Counting(), S, moons(), TrainConfig(steps=10, batch_size=8, checkpoint_every=20), out_dir=tmp_path,
              progress=False, resume=True)
    assert r.resumed_from == 7 and r.step == 10
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the run


def test_a_huge_log_every_allocates_a_small_buffer(monkeypatch):
    import importlib

    loop = importlib.import_module("ddpm.train")  # the module (ddpm.train is the function)
    sizes = []
    real = loop.TrainStep

    def spy(*a, **kw):
        sizes.append(kw["buffer_size"])
        return real(*a, **kw)

    monkeypatch.setattr(loop, "TrainStep", spy)
    r = train(Counting(), S, moons(), TrainConfig(steps=12, batch_size=8, log_every=10**12), progress=False)
    assert sizes == [loop.LOSS_BUFFER] and len(r.losses) == 12


def test_unplottable_samples_turn_the_grids_off_with_a_warning(tmp_path, capsys):
    points3 = torch.randn(64, 3)
    r = train(MLP(MLPConfig(dim=3, hidden=8, layers=1)), S, points3, TrainConfig(steps=6, batch_size=8, sample_every=2),
              out_dir=tmp_path, progress=False)
    assert r.step == 6 and not (tmp_path / "samples.png").exists()
    assert "no sample grids" in capsys.readouterr().err


def test_a_checkpoint_write_failing_inside_torch_save_names_the_path(tmp_path, monkeypatch):
    import ddpm.checkpoint

    real = torch.save

    def broken(obj, f):  # the disk fills up while torch.save writes the checkpoint
        if "ckpt-" in str(getattr(f, "name", "")):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real(obj, f)

    monkeypatch.setattr(ddpm.checkpoint.torch, "save", broken)
    with pytest.raises(RunFolderError) as e:
        train(Counting(), S, moons(), TrainConfig(steps=3, batch_size=8), out_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "ckpt-00000003.pt" in msg and "write failed" in msg
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
