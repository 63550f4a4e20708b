"""Training with torch.distributed on the CPU (gloo, 2 processes under torchrun): the run does not
depend on the number of processes, rank 0 alone writes the run folder, a killed process ends the
job with a message and the run resumes; plus ddpm.distributed's sharding helpers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def small_mlp():
    from ddpm import MLP, MLPConfig

    torch.manual_seed(0)
    return MLP(MLPConfig(hidden=32, layers=2))


def moons():
    from ddpm import load_dataset

    return load_dataset("moons", n=512, generator=torch.Generator().manual_seed(123))


def worker(cfg_json: str, out: str, res: str, resume: str) -> None:
    """One process of a torchrun job: train, then save this rank's weights and losses to res/."""
    from ddpm import Schedule, TrainConfig, train

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    res = Path(res)
    res.mkdir(parents=True, exist_ok=True)
    (res / f"pid{rank}").write_text(str(os.getpid()))
    r = train(small_mlp(), Schedule.linear(100), moons(), TrainConfig(**json.loads(cfg_json)), out_dir=out,
              progress=False, resume=resume == "1", meta={"data": "moons"})
    torch.save({"losses": r.losses, "model": r.model.state_dict(), "ema": r.ema.state_dict(), "rank": r.rank,
                "world_size": r.world_size, "step": r.step}, res / f"rank{rank}.pt")


def torchrun(nproc, cfg, out, res, resume=False, timeout=120, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(HERE),
           json.dumps(cfg), str(out), str(res), "1" if resume else "0"]  # --standalone: a free port picked at run time
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def one_process(cfg, out=None, resume=False):
    from ddpm import Schedule, TrainConfig, train

    return train(small_mlp(), Schedule.linear(100), moons(), TrainConfig(**cfg), out_dir=out, progress=False,
                 resume=resume, meta={"data": "moons"})


def assert_close_states(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def test_two_processes_reproduce_one_and_rank_0_alone_writes(tmp_path):
    from ddpm.checkpoint import list_checkpoints, load_checkpoint

    cfg = dict(steps=40, batch_size=32, log_every=10, checkpoint_every=20, keep_checkpoints=0)
    torchrun(2, cfg, tmp_path / "out", tmp_path / "res")
    r0, r1 = (torch.load(tmp_path / "res" / f"rank{k}.pt") for k in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    # Every process ends with the same weights and the same EMA, bit for bit.
    for key in ("model", "ema"):
        assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key]), key
    assert r0["losses"] == r1["losses"]
    # ... and they equal one process with the same global batch, to float tolerance (the gradient is
    # the mean of two half-batch means, summed by the all-reduce in another order).
    one = one_process(cfg)
    assert len(r0["losses"]) == 40
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(one.losses), atol=1e-5, rtol=1e-5)
    assert_close_states(r0["model"], one.model.state_dict(), atol=1e-5)
    assert_close_states(r0["ema"], one.ema.state_dict(), atol=1e-5)
    # Rank 0 alone wrote the folder: each checkpoint once, one header and one row per log interval.
    out = tmp_path / "out"
    assert [k for k, _ in list_checkpoints(out)] == [20, 40]
    assert load_checkpoint(out).meta["world_size"] == 2
    rows = (out / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [int(r.split(",")[0]) for r in rows[1:]] == [10, 20, 30, 40]
    assert not [p for p in out.iterdir() if "tmp" in p.name]


def test_a_killed_process_ends_the_job_and_the_run_resumes_with_another_world_size(tmp_path):
    from ddpm.checkpoint import list_checkpoints, read_payload

    cfg = dict(steps=600, batch_size=32, log_every=10, checkpoint_every=20, keep_checkpoints=0)
    out, res = tmp_path / "out", tmp_path / "res"
    proc = torchrun(2, cfg, out, res, wait=False)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None and not list_checkpoints(out):
            time.sleep(0.1)
        assert proc.poll() is None, f"the job ended before a process could be killed: {proc.stdout.read().decode()[-2000:]}"
        os.kill(int((res / "pid1").read_text()), signal.SIGKILL)
        t0 = time.time()
        log, _ = proc.communicate(timeout=60)  # bounded: no hang on the lost process
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = log.decode()
    assert proc.returncode != 0 and took < 60
    assert "local_rank: 1" in log and "SIGKILL" in log, log[-2000:]  # the launcher names the process that died
    done = [k for k, _ in list_checkpoints(out)]
    assert done and max(done) < 600
    for _, p in list_checkpoints(out):
        read_payload(p)  # every checkpoint left is whole (checksum verified)
    # Resume with one process: the draws are defined for the global batch, so it continues the same run.
    r = one_process(cfg, out, resume=True)
    assert r.resumed_from == max(done) and r.step == 600
    straight = one_process(cfg)
    torch.testing.assert_close(torch.tensor(r.losses), torch.tensor(straight.losses), atol=1e-4, rtol=1e-4)
    assert_close_states(r.model.state_dict(), straight.model.state_dict(), atol=1e-4)
    assert_close_states(r.ema.state_dict(), straight.ema.state_dict(), atol=1e-4)
    steps = [int(row.split(",")[0]) for row in (out / "loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(10, 601, 10))  # the log: rows up to the checkpoint kept, the rest appended once


def test_the_command_line_trains_under_torchrun(tmp_path):
    """(No --n here: torchrun's own parser takes it for an abbreviation of --nnodes/--nproc-per-node.)"""
    from ddpm.checkpoint import list_checkpoints, load_checkpoint

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddpm",
                        "train", "--data", "moons", "--T", "50", "--hidden", "16", "--layers", "1",
                        "--batch-size", "32", "--steps", "20", "--checkpoint-every", "10", "--log-every", "5",
                        "--no-progress", "--device", "cpu", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert [k for k, _ in list_checkpoints(out)] == [10, 20]
    assert p.stdout.count("trained mlp on moons") == 1  # process 0 alone reports
    ck = load_checkpoint(out)
    assert ck.meta["world_size"] == 2 and ck.meta["data"] == "moons" and len(ck.losses) == 20

    # sampling under torchrun: the blocks are shared out and gathered, the samples are those of one process
    sample = ["sample", "--checkpoint", str(out), "--sampler", "ddim", "--steps", "10", "-n", "300", "--batch", "64",
              "--seed", "1", "--no-progress", "--device", "cpu"]
    p2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddpm",
                         *sample, "--out", str(tmp_path / "two.png")], env=env, capture_output=True, text=True, timeout=120)
    assert p2.returncode == 0, p2.stdout[-2000:] + p2.stderr[-3000:]
    assert p2.stdout.count("wrote ") == 1
    p1 = subprocess.run([sys.executable, "-m", "ddpm", *sample, "--out", str(tmp_path / "one.png")], env=env,
                        capture_output=True, text=True, timeout=120)
    assert p1.returncode == 0, p1.stderr[-3000:]
    import numpy as np

    assert np.array_equal(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"))


def test_shard_covers_every_index_once():
    from ddpm.distributed import shard

    for n in (0, 1, 5, 16):
        for ws in (1, 2, 3, 7):
            parts = [list(shard(n, r, ws)) for r in range(ws)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard(4, 2, 2)


def sharded_worker(out: str) -> None:
    """Under torchrun: sample_sharded with a toy sampler; rank 0 saves what it gathered."""
    import torch.distributed as dist

    from ddpm.distributed import context, gather, sample_sharded, shard

    ctx = context("cpu")
    x = sample_sharded(lambda k, g: torch.randn(k, 3, generator=g), 10, seed=5, batch_size=3, ctx=ctx)
    assert (x is None) == (ctx.rank != 0)
    mine = shard(7, ctx.rank, ctx.world_size)
    items = gather(torch.arange(mine.start, mine.stop).float().unsqueeze(1) * 10, 7, ctx)  # (7, 1) on rank 0
    if ctx.rank == 0:
        torch.save({"samples": x, "gathered": items}, out)
    dist.barrier()
    ctx.close()


def test_sample_sharded_does_not_depend_on_the_number_of_processes(tmp_path):
    from ddpm.distributed import DistContext, sample_sharded

    fn = lambda k, g: torch.randn(k, 3, generator=g)  # noqa: E731
    one = sample_sharded(fn, 10, seed=5, batch_size=3, ctx=DistContext())
    want = torch.cat([torch.randn(min(3, 10 - 3 * j), 3, generator=torch.Generator().manual_seed(5 + j)) for j in range(4)])
    assert torch.equal(one, want)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE),
                        "sharded", str(tmp_path / "x.pt")], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    got = torch.load(tmp_path / "x.pt")
    assert torch.equal(got["samples"], one)
    assert torch.equal(got["gathered"], torch.arange(7).float().unsqueeze(1) * 10)
    with pytest.raises(ValueError, match="n must be"):
        sample_sharded(fn, 0, ctx=DistContext())


if __name__ == "__main__":
    if sys.argv[1] == "sharded":
        sharded_worker(sys.argv[2])
    else:
        worker(*sys.argv[1:])
