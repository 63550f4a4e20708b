"""The command line: ``python -m ddpm {train,sample,evaluate,train-classifier}``.

    python -m ddpm train --data moons --steps 3000 --seed 0 --out runs/moons
    python -m ddpm train --data moons --steps 3000 --seed 0 --out runs/moons --resume
    python -m ddpm sample --checkpoint runs/moons --sampler ddim --steps 50 --eta 0 -n 1000 --seed 0 --out samples.png
    python -m ddpm evaluate --checkpoint runs/moons --sampler ddim --steps 50 -n 1000 --json

Set DDPM_DEBUG=1 to see full tracebacks.

Bad input (unknown data set, steps > T, a missing, corrupted or mismatched checkpoint, a CUDA
request without CUDA, a NaN loss) prints one line ``error: ...`` on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

# --model choices -> (kind, U-Net preset or None)
MODELS = {
    "mlp": None,
    "unet-digits": "digits",
    "unet-fashion-mnist": "fashion-mnist",
    "unet-ddpm-cifar10": "ddpm-cifar10",
}

# Per data set defaults: model, batch size, learning rate, warm-up. Toys: the small MLP at lr 1e-3;
# images: the matching U-Net preset (DDPM used lr 2e-4 and batch 128 for CIFAR-10; the small digits
# U-Net trains faster at 1e-3 on a CPU, see benchmarks/README.md).
DEFAULTS = {
    "toy": dict(model="mlp", batch_size=256, lr=1e-3, warmup=100),
    "digits": dict(model="unet-digits", batch_size=128, lr=1e-3, warmup=200),
    "fashion-mnist": dict(model="unet-fashion-mnist", batch_size=128, lr=2e-4, warmup=1000),
    "mnist": dict(model="unet-fashion-mnist", batch_size=128, lr=2e-4, warmup=1000),
    "cifar10": dict(model="unet-ddpm-cifar10", batch_size=128, lr=2e-4, warmup=5000),
}


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _defaults(data: str) -> dict:
    from .data import TOYS

    if data in TOYS:
        return DEFAULTS["toy"]
    return DEFAULTS.get(data, DEFAULTS["toy"])


def _schedule(name: str, T: int):
    from .schedule import Schedule

    if name == "linear":
        return Schedule.linear(T)
    if name == "cosine":
        return Schedule.cosine(T)
    raise ValueError(f"--schedule must be 'linear' or 'cosine', got {name!r}")


def build_model(name: str, data: torch.Tensor, seed: int, hidden: int | None = None, layers: int | None = None):
    """The model ``name`` (a ``--model`` choice) for data of ``data``'s shape, initialised from ``seed``."""
    from .nets import MLP, MLPConfig, UNet, UNetConfig

    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choose one of {', '.join(MODELS)}")
    item = tuple(data.shape[1:])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if MODELS[name] is None:
            if len(item) != 1:
                raise ValueError(f"--model mlp is for flat (N, d) data; this data has items of shape {item}: use a U-Net")
            kw = {k: v for k, v in (("hidden", hidden), ("layers", layers)) if v is not None}
            return MLP(MLPConfig(dim=item[0], **kw))
        cfg = UNetConfig.preset(MODELS[name])
        want = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if item != want:
            raise ValueError(f"--model {name} takes images of shape {want}; this data has {item}")
        return UNet(cfg)


# ---------------------------------------------------------------------------- train
def cmd_train(a) -> int:
    from .data import load_dataset
    from .train import TrainConfig, train

    d = _defaults(a.data)
    data = load_dataset(a.data, n=a.n, data_dir=a.data_dir, generator=torch.Generator().manual_seed(a.seed + 1))
    model_name = a.model or d["model"]
    model = build_model(model_name, data, a.seed, a.hidden, a.layers)
    schedule = _schedule(a.schedule, a.T)
    config = TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size or d["batch_size"],
        lr=a.lr or d["lr"],
        warmup=a.warmup if a.warmup is not None else d["warmup"],
        ema_decay=a.ema_decay,
        grad_clip=a.grad_clip,
        seed=a.seed,
        checkpoint_every=a.checkpoint_every,
        device=a.device,
        bf16=a.bf16,
        compile=a.compile,
        compile_mode=a.compile_mode,
        channels_last=a.channels_last,
        log_every=a.log_every,
    )
    out = Path(a.out)
    if not a.resume and out.is_dir() and any(out.glob("ckpt-*.pt")):
        raise CLIError(f"{out} already holds checkpoints: add --resume to continue that run, or choose another --out")
    meta = {"data": a.data, "data_dir": a.data_dir, "n": a.n, "model": model_name, "schedule": a.schedule}
    r = train(model, schedule, data, config, out_dir=out, progress=not a.no_progress, resume=a.resume, meta=meta)
    last = r.losses[-1] if r.losses else float("nan")
    print(f"trained {model_name} on {a.data} to step {r.step} (resumed from {r.resumed_from}); "
          f"final loss {last:.4f}; {r.steps_per_sec:.1f} steps/s; checkpoint {r.checkpoint}")
    return 0


# ---------------------------------------------------------------------------- sample / evaluate
def _load(a):
    from .checkpoint import load_checkpoint
    from .train import resolve_device

    device = resolve_device(a.device)
    ck = load_checkpoint(a.checkpoint, device=device)
    return ck, device


def _check_steps(sampler: str, steps, T: int) -> int:
    if steps is None:
        return 50 if sampler == "ddim" else T
    if isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"--steps must be in 1..T = 1..{T}, got {steps}")
    return steps


def _draw(ck, device, sampler: str, steps: int, eta: float, n: int, seed: int, progress: bool, raw: bool = False, batch: int = 0,
          fast: bool = False):
    """n samples from the checkpoint's EMA (or raw) weights, in batches; CPU float32 tensor.
    ``fast``: CUDA only, the network runs through :class:`ddpm.fast.FastEps` (bf16, CUDA graphs)."""
    from .samplers import sample_ddim, sample_ddpm

    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    if eta < 0:
        raise ValueError(f"--eta must be >= 0, got {eta}")
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"--sampler must be 'ddpm' or 'ddim', got {sampler!r}")
    model = ck.model if raw or ck.ema is None else ck.ema
    if fast:
        if torch.device(device).type != "cuda":
            raise ValueError("--fast needs CUDA (bf16 and CUDA graphs); drop it to sample on the CPU")
        from .fast import FastEps

        model = FastEps(model.to(device), channels_last=hasattr(model.config, "image_size"))
    s = ck.schedule.to(device)
    shape_item = _item_shape(ck)
    gen = torch.Generator(device=device).manual_seed(seed)
    batch = batch or n
    out = []
    for i in range(0, n, batch):
        shape = (min(batch, n - i), *shape_item)
        if sampler == "ddpm" and steps == ck.schedule.T:
            x = sample_ddpm(model, s, shape, generator=gen, progress=progress, device=device)
        else:
            # DDPM on a sub-sequence is DDIM with eta = 1 (Song et al. 2021, sec. 4.2).
            x = sample_ddim(model, s, shape, steps=steps, eta=1.0 if sampler == "ddpm" else eta, generator=gen,
                            progress=progress, device=device)
        out.append(x.float().cpu())
    return torch.cat(out)


def _item_shape(ck) -> tuple:
    c = ck.model.config
    if hasattr(c, "image_size"):
        return (c.in_channels, c.image_size, c.image_size)
    return (c.dim,)


def save_figure(x: torch.Tensor, path: Path, title: str = "") -> None:
    """A scatter plot (2-D points) or an image grid (images in [-1, 1]) saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        pts = x[:, :2].numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.6)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_aspect("equal")
    else:
        k = min(x.shape[0], 100)
        cols = math.ceil(math.sqrt(k))
        rows = math.ceil(k / cols)
        C, H, W = x.shape[1:]
        grid = torch.ones(C, rows * (H + 1) + 1, cols * (W + 1) + 1)
        img = ((x[:k].clamp(-1, 1) + 1) / 2)
        for i in range(k):
            r, c = divmod(i, cols)
            grid[:, 1 + r * (H + 1) : 1 + r * (H + 1) + H, 1 + c * (W + 1) : 1 + c * (W + 1) + W] = img[i]
        fig, ax = plt.subplots(figsize=(min(1 + cols * 0.6, 12), min(1 + rows * 0.6, 12)))
        arr = grid.permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if C == 1 else arr, cmap="gray" if C == 1 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_sample(a) -> int:
    ck, device = _load(a)
    steps = _check_steps(a.sampler, a.steps, ck.schedule.T)
    out = Path(a.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg"):
        raise ValueError(f"--out must be an image file (.png, .pdf, .svg, .jpg), got {out}")
    x = _draw(ck, device, a.sampler, steps, a.eta, a.n, a.seed, not a.no_progress, a.raw_weights, a.batch, a.fast)
    raw = out.with_suffix(".npy")
    save_figure(x, out, f"{a.sampler}, {steps} steps, eta={a.eta if a.sampler == 'ddim' else 1}, step {ck.step}")
    np.save(raw, x.numpy())
    print(f"wrote {out} and {raw} ({x.shape[0]} samples of shape {tuple(x.shape[1:])})")
    return 0


def cmd_evaluate(a) -> int:
    from .classifier import SHAPES, confident_fraction
    from .data import TOYS, load_dataset
    from .metrics import distance_report

    ck, device = _load(a)
    steps = _check_steps(a.sampler, a.steps, ck.schedule.T)
    name = ck.data
    if name is None:
        raise ValueError(f"{ck.path} does not record its data set; it was not written by `python -m ddpm train`")
    data_dir = a.data_dir or ck.meta.get("data_dir")
    gen = torch.Generator().manual_seed(a.seed + 2)
    if name in TOYS:
        n = a.n or 1000
        data = load_dataset(name, n=2 * n, generator=gen)
    else:
        split = "all" if name == "digits" else "train"
        data = load_dataset(name, data_dir=data_dir, split=split)
        n = a.n or min(1000, data.shape[0] // 2)
        if 2 * n > data.shape[0]:
            raise ValueError(f"-n {n} is too large: the {name} baseline needs 2 n data points and there are {data.shape[0]}; use -n {data.shape[0] // 2} or less")
    x = _draw(ck, device, a.sampler, steps, a.eta, n, a.seed, not a.no_progress, a.raw_weights, a.batch, a.fast)
    result = {"checkpoint": str(ck.path), "step": ck.step, "data": name, "sampler": a.sampler, "steps": steps,
              "eta": a.eta if a.sampler == "ddim" else 1.0, "n": n, "metrics": {}}
    if x.dim() == 2:
        for metric in ("sliced_wasserstein", "energy"):
            result["metrics"][metric] = distance_report(x, data, metric, generator=torch.Generator().manual_seed(a.seed + 3))
    elif name in SHAPES:
        result["metrics"]["frechet"] = distance_report(x, data, "frechet", generator=torch.Generator().manual_seed(a.seed + 3), dataset=name)
        result["metrics"]["confident_fraction"] = confident_fraction(x, name, 0.9)
    if a.bpd:
        from .losses import bits_per_dim

        model = ck.ema if ck.ema is not None and not a.raw_weights else ck.model
        s = ck.schedule.to(device)
        test = load_dataset(name, n=a.bpd, generator=torch.Generator().manual_seed(a.seed + 4), data_dir=data_dir,
                            **({"split": "test"} if name not in TOYS else {}))
        with torch.no_grad():
            bpd = bits_per_dim(model, s, test.to(device), generator=torch.Generator(device=device).manual_seed(a.seed))
        result["metrics"]["bits_per_dim"] = {"mean": float(bpd.mean()), "n": int(test.shape[0])}
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{ck.path} (step {ck.step}, {name}), {a.sampler} {steps} steps, n = {n}:")
        for k, v in result["metrics"].items():
            if isinstance(v, dict) and "distance" in v:
                print(f"  {k:20s} {v['distance']:.5f}   (data vs data {v['baseline']:.5f}; noise vs data {v['noise']:.5f})")
            elif isinstance(v, dict):
                print(f"  {k:20s} {v['mean']:.4f}   (over {v['n']} held-out points)")
            else:
                print(f"  {k:20s} {v:.4f}")
    return 0


def cmd_train_classifier(a) -> int:
    from . import classifier

    return classifier.main(["--data", a.data, "--seed", str(a.seed), "--threads", str(a.threads or 1)]
                           + (["--epochs", str(a.epochs)] if a.epochs else []) + (["--data-dir", a.data_dir] if a.data_dir else [])
                           + (["--out", a.out] if a.out else []))


# ---------------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ddpm", description="Train, sample and evaluate DDPM/DDIM models.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q, device=True):
        q.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
        q.add_argument("--no-progress", action="store_true", help="no progress bar")
        if device:
            q.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu, cuda, cuda:N")

    t = sub.add_parser("train", help="train a model; checkpoints go to --out")
    t.add_argument("--data", required=True, help="moons, swissroll, 8gaussians, checkerboard, mixture, digits, fashion-mnist, mnist, cifar10, or a .npy/.npz/.csv file")
    t.add_argument("--data-dir", default=None, help="folder with the mnist / fashion-mnist / cifar10 files")
    t.add_argument("--n", type=int, default=None, help="toys: points drawn (default 10000); images: keep this many")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="run folder for checkpoints")
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    t.add_argument("--model", default=None, choices=list(MODELS), help="default: mlp for 2-D toys, the data set's U-Net preset for images")
    t.add_argument("--hidden", type=int, default=None, help="MLP width (default 256)")
    t.add_argument("--layers", type=int, default=None, help="MLP residual blocks (default 3)")
    t.add_argument("--T", type=int, default=1000, help="diffusion steps T")
    t.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--warmup", type=int, default=None)
    t.add_argument("--ema-decay", type=float, default=0.9999)
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    t.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="with --compile: reduce-overhead captures each step in CUDA graphs (fastest measured)")
    t.add_argument("--channels-last", action="store_true", help="NHWC activations for image models (CUDA only)")
    common(t)
    t.set_defaults(func=cmd_train)

    for name, func, help_ in (("sample", cmd_sample, "draw samples from a checkpoint"),
                              ("evaluate", cmd_evaluate, "sample and print distances to the data")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--checkpoint", required=True, help="a checkpoint file, or a run folder (its latest checkpoint)")
        s.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim"])
        s.add_argument("--steps", type=int, default=None, help="sampling steps, 1..T (default: 50 for ddim, T for ddpm)")
        s.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic; 1: DDPM-like)")
        s.add_argument("-n", type=int, default=None if name == "evaluate" else 1000, help="number of samples")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--batch", type=int, default=0, help="samples per batch (0: all at once)")
        s.add_argument("--raw-weights", action="store_true", help="sample with the raw weights instead of the EMA")
        s.add_argument("--fast", action="store_true", help="CUDA only: bf16 autocast + CUDA graphs for the network (ddpm.fast.FastEps)")
        if name == "sample":
            s.add_argument("--out", default="samples.png", help="image file; the raw samples go beside it as .npy")
        else:
            s.add_argument("--json", action="store_true", help="print JSON")
            s.add_argument("--data-dir", default=None)
            s.add_argument("--bpd", type=int, default=0, metavar="N", help="also bits/dim through the full bound on N held-out points (T network calls each)")
        common(s)
        s.set_defaults(func=func)

    c = sub.add_parser("train-classifier", help="train the classifier behind the Frechet distance")
    c.add_argument("--data", default="digits", choices=["digits", "fashion-mnist"])
    c.add_argument("--epochs", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--data-dir", default=None)
    c.add_argument("--out", default=None, help="folder for the weights (default: the package's ddpm/weights)")
    common(c, device=False)
    c.set_defaults(func=cmd_train_classifier)
    return p


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    if getattr(a, "threads", None):
        if a.threads < 1:
            print("error: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(a.threads)
    try:
        return a.func(a)
    except KeyboardInterrupt:
        print("error: interrupted (the last checkpoint is kept)", file=sys.stderr)
        return 130
    except Exception:
        if os.environ.get("DDPM_DEBUG"):  # DDPM_DEBUG=1 shows the full traceback
            raise
        return _report(sys.exc_info()[1])


def _report(err: BaseException) -> int:
    try:
        raise err
    except (CLIError, ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        msg = str(e).strip().replace("\n", " ")
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # CUDA errors (out of memory, driver missing) and the like: one line too
        first = (str(e).strip().splitlines() or ["runtime error"])[0]
        print(f"error: {type(e).__name__}: {first}", file=sys.stderr)
        return 2
