"""The command line: ``python -m ddpm {train,sample,evaluate,train-classifier}``::

    python -m ddpm train --data moons --steps 3000 --seed 0 --out runs/moons
    python -m ddpm train --out runs/moons --resume --steps 6000
    python -m ddpm sample --checkpoint runs/moons --sampler ddim -n 1000
    python -m ddpm evaluate --checkpoint runs/moons --steps 50 -n 1000 --json

Every flag is checked before any work starts. Bad input (a value out of range, a flag that does
not apply, a missing, corrupted or mismatched checkpoint, a file where a folder is expected, a full
disk, NaN samples) prints one line ``error: ...`` on stderr and exits with code 2; set
``DDPM_DEBUG=1`` to see the traceback instead. Figures and sample arrays are written atomically.
The pieces live in :mod:`ddpm.cli_args` (parser), :mod:`ddpm.presets` (models),
:mod:`ddpm.cli_sampling` (the command line's sampler policy) and :mod:`ddpm.plotting` (figures).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from .cli_args import (
    PER_DATA,
    SUPPRESS,
    CLIError,
    OneLineParser,
    add_train_config_flags,
    finite_float,
    flag,
    int_at_least,
    int_list,
    make_train_config,
    train_config_fields,
    user_path,
)
from .checkpoint import CheckpointWarning, list_checkpoints, load_checkpoint
from .classifier import CONFIGS, SHIPPED, load_classifier, save_classifier, train_command
from .classifier_training import train_classifier
from .cli_sampling import check_sampler, draw, item_shape
from .config import RESUMABLE, SEED_MAX
from .data import DATASETS, IMAGES, data_digest, is_file_spec, load_dataset
from .features import confident_fraction
from .losses import bits_per_dim
from .metrics import distance_report
from .plotting import FIGURE_SUFFIXES, check_finite, save_array, save_figure
from .presets import DEFAULTS, MLP_FLAGS, MODELS, UNET_FLAGS, build_preset, defaults_for, model_from_config
from .schedule import Schedule
from .resume import ResumeMismatch, check_resume
from .runfolder import check_contents
from .toys import DEFAULT_TOY_N, TOYS
from .train import Interrupted, resolve_device, train

SCHEDULES = ("linear", "cosine")
# Threads: one for a small model, all cores for a large one. Measured for the moons MLP (150 steps,
# batch 256) on a 2-core machine shared with other jobs: 1 thread 14.0 and 2.2 steps/s, 2 threads
# 0.25 and 0.25 steps/s: a second thread that has to wait for a busy core stalls every step.
SMALL_MODEL_PARAMS = 2_000_000
MAX_THREADS = os.cpu_count() or 1  # more threads than cores only slow torch down
MAX_ITEMS = 10**8  # data items, samples, blocks: beyond this a run cannot hold them in memory
MAX_T = 100_000  # diffusion steps (DDPM: 1000)
PACKAGE_DIR = Path(__file__).resolve().parent
# U-Net flag -> UNetConfig field
UNET_FLAG_NAMES = {fl.lstrip("-").replace("-", "_"): fd for fd, fl in UNET_FLAGS.items()}  # dest -> field
MODEL_FIELD_FLAGS = {**UNET_FLAGS, **MLP_FLAGS}  # model config field -> flag


def _given(a, name) -> bool:
    return hasattr(a, name)


def _set_threads(a, model) -> int:
    """``--threads`` if given, else 1 for a small model and all cores for a large one."""
    if _given(a, "threads"):
        n = a.threads
    else:
        params = sum(p.numel() for p in model.parameters())
        n = 1 if params < SMALL_MODEL_PARAMS else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def _writable_dir(folder: Path, what: str) -> None:
    """Check, before any work, that ``folder`` is (or can be made) a folder we may write into.
    Nothing is created here; the writer creates the folder when it first saves."""
    if PACKAGE_DIR in [folder.resolve(), *folder.resolve().parents]:
        raise CLIError(f"{what} {folder} is inside the installed ddpm package; choose a folder of your own")
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"{what} {folder}: {parent} is a file; a folder is expected there")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(13, "folder is not writable", str(parent))
            return


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _resolve_device(name: str):
    return resolve_device(name)


# ---------------------------------------------------------------------------- train
def _arch(a) -> dict:
    """The model flags given: MLP fields and U-Net fields (by UNetConfig name)."""
    arch = {k: getattr(a, k) for k in MLP_FLAGS if _given(a, k)}
    arch.update({UNET_FLAG_NAMES[k]: getattr(a, k) for k in UNET_FLAG_NAMES if _given(a, k)})
    return arch


def _data_spec(a, stored: dict | None = None) -> dict:
    """What the checkpoint stores about the data: the data set name or a user's file as an absolute
    path with its SHA-256, the data folder, ``n`` (a toy's default made explicit) and the seed of the
    draw. On ``--resume`` (``stored``: the checkpoint's record) the flags given override the record."""
    stored = stored or {}
    data = a.data if _given(a, "data") else stored.get("data")
    if _given(a, "data") and is_file_spec(data):
        data = str(Path(data).resolve())
    if not _given(a, "data") and data is not None and is_file_spec(data) and not Path(data).exists():
        raise CLIError(f"the run's data {data} (recorded in {stored.get('ckpt', 'its checkpoint')}) is not there; "
                       "pass --data with its new location")
    data_dir = str(Path(a.data_dir).resolve()) if _given(a, "data_dir") and a.data_dir else stored.get("data_dir")
    n = a.n if _given(a, "n") else stored.get("n") if stored else None
    if n is None and not stored and data in TOYS:
        n = DEFAULT_TOY_N
    seed = stored.get("data_seed") if stored else getattr(a, "seed", 0) + 1
    return {"data": data, "data_sha256": data_digest(data), "data_dir": data_dir, "n": n, "data_seed": seed}


def _load_data(spec: dict):
    return load_dataset(spec["data"], n=spec.get("n"), data_dir=spec.get("data_dir"),
                        generator=torch.Generator().manual_seed(spec.get("data_seed", 1)))


def _flag_of(e: ResumeMismatch) -> str:
    """The command-line flag behind a resume mismatch."""
    if e.kind == "model" and e.field in MODEL_FIELD_FLAGS:
        return MODEL_FIELD_FLAGS[e.field]
    return {"data_sha256": "--data", "model class": "--model", "T": "--T"}.get(e.field, flag(e.field))


def _check_resume_flags(ck, a, spec: dict, meta: dict, schedule, config) -> None:
    """The flags of a ``--resume`` against the run's checkpoint, by :func:`ddpm.resume.check_resume`
    (the check :func:`ddpm.train` repeats), before any data are loaded; the error names the flag."""
    model_config = {**ck.payload["model_config"], **_arch(a)}
    try:
        check_resume(ck, model_class=ck.payload["model_class"], model_config=model_config, schedule=schedule,
                     config=config, meta=meta)
    except ResumeMismatch as e:
        if e.field == "data_sha256":
            raise CLIError(f"the data file {spec['data']} changed since the run started (its SHA-256 differs from the one "
                           f"stored in {ck.path}); restore it, or train a new run into another --out") from None
        if e.kind == "train":
            raise CLIError(f"{_flag_of(e)} {e.new} differs from the run's {e.old} (stored in {ck.path}); "
                           f"only {', '.join(flag(x) for x in sorted(RESUMABLE))} may change on --resume") from None
        new = e.new if e.field not in ("schedule",) else a.schedule if _given(a, "schedule") else e.new
        old = e.old if e.field not in ("schedule",) else ck.meta.get("schedule", e.old)
        raise CLIError(f"{_flag_of(e)} {new} differs from the run's {old} (stored in {ck.path}); "
                       "a resumed run keeps its settings: drop the flag, or train into another --out") from None


def _schedule(name: str, T: int) -> Schedule:
    return Schedule.linear(T) if name == "linear" else Schedule.cosine(T)


def _resume_setup(a, out: Path):
    """Model, schedule, data, config and meta of a run continued from its checkpoint in ``out``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the training loop reports a skipped file itself
        ck = load_checkpoint(a.checkpoint or out, report=_warn)
    stored = dict(ck.meta)
    if "data" not in stored:
        raise CLIError(f"{ck.path} does not record its data set (not written by `python -m ddpm train`); resume it from Python")
    spec = _data_spec(a, {**stored, "ckpt": ck.path})
    sname = a.schedule if _given(a, "schedule") else stored.get("schedule", "linear")
    schedule = ck.schedule if not (_given(a, "schedule") or _given(a, "T")) else _schedule(sname, a.T if _given(a, "T") else ck.schedule.T)
    base = dataclasses.asdict(ck.config) if not isinstance(ck.config, dict) else dict(ck.config)
    config = make_train_config(**{**base, **train_config_fields(a)})
    model_name = a.model if _given(a, "model") else stored.get("model", ck.payload["model_class"])
    meta = {**stored, **spec, "model": model_name, "schedule": sname}
    _check_resume_flags(ck, a, spec, meta, schedule, config)
    data = _load_data(spec)
    with torch.random.fork_rng():
        torch.manual_seed(ck.config.seed if not isinstance(ck.config, dict) else 0)
        model = model_from_config(ck.payload["model_class"], ck.payload["model_config"])
    return model, schedule, data, config, model_name, meta


def _fresh_setup(a):
    """Model, schedule, data, config and meta of a new run from the flags."""
    if not _given(a, "data"):
        raise CLIError("--data is required (only --resume on a run folder with checkpoints reads it from the checkpoint)")
    a.seed = getattr(a, "seed", 0)
    spec = _data_spec(a)
    data = _load_data(spec)
    item = tuple(data.shape[1:])
    d = defaults_for(a.data, item)
    model_name = a.model if _given(a, "model") else d["model"]
    model = build_preset(model_name, item, seed=a.seed, **_arch(a))
    sname = a.schedule if _given(a, "schedule") else "linear"
    schedule = _schedule(sname, a.T if _given(a, "T") else 1000)
    config = make_train_config(**{**{k: d[k] for k in PER_DATA}, **train_config_fields(a)})
    return model, schedule, data, config, model_name, {**spec, "model": model_name, "schedule": sname}


def cmd_train(a) -> int:
    out = Path(a.out)
    _writable_dir(out, "--out")
    if a.checkpoint is not None:
        if not a.resume:
            raise CLIError("--checkpoint picks the checkpoint a --resume continues from: add --resume")
        chosen = Path(a.checkpoint)
        if not chosen.is_file():
            raise CLIError(f"--checkpoint {chosen} is not a checkpoint file")
        if chosen.resolve().parent != out.resolve():
            raise CLIError(f"--checkpoint {chosen} is not in the run folder --out {out}")
    has_ckpt = bool(list_checkpoints(out))
    if has_ckpt and not a.resume:
        raise CLIError(f"{out} already holds checkpoints: add --resume to continue that run, or choose another --out")
    check_contents(out, fresh=not a.resume)  # before any work; train() checks again under the folder's lock
    model, schedule, data, config, model_name, meta = _resume_setup(a, out) if a.resume and has_ckpt else _fresh_setup(a)
    threads = _set_threads(a, model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CheckpointWarning)  # a skipped damaged file was reported above
            r = train(model, schedule, data, config, out_dir=out, progress=not a.no_progress,
                      resume=Path(a.checkpoint) if a.checkpoint else a.resume, meta=meta)
    except Interrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return 143 if e.signal == "SIGTERM" else 130
    if getattr(r, "rank", 0) != 0:  # under torchrun process 0 alone reports
        return 0
    last = r.losses[-1] if r.losses else float("nan")
    print(f"trained {model_name} on {meta['data']} to step {r.step} (resumed from {r.resumed_from}); "
          f"final loss {last:.4f}; {r.steps_per_sec:.1f} steps/s on {threads} thread(s); checkpoint {r.checkpoint}")
    return 0


# ---------------------------------------------------------------------------- sample / evaluate
def _load(a):
    device = _resolve_device(a.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ck = load_checkpoint(a.checkpoint, device=device, report=_warn)
    steps, eta = _sampler_args(a, ck.schedule.T)
    model = ck.model if a.raw_weights or ck.ema is None else ck.ema
    _set_threads(a, model)
    return ck, model, device, steps, eta


def _sampler_args(a, T):
    return check_sampler(a.sampler, T, steps=getattr(a, "steps", None), eta=getattr(a, "eta", None))


def _draw(a, ck, model, device, steps, eta, n):
    x = draw(model, ck.schedule, n, sampler=a.sampler, steps=steps, eta=eta, seed=a.seed, device=device, progress=not a.no_progress,
             batch=a.batch, fast=a.fast)
    if x is not None:  # under torchrun only process 0 holds the gathered samples
        check_finite(x)
    return x


def cmd_sample(a) -> int:
    out = Path(a.out)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise CLIError(f"--out must be an image file ({', '.join(FIGURE_SUFFIXES)}), got {out}")
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give an image file name")
    _writable_dir(out.parent, "the folder of --out")
    ck, model, device, steps, eta = _load(a)
    try:
        x = _draw(a, ck, model, device, steps, eta, a.n)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    if x is None:  # another process of a torchrun job: process 0 writes
        return 0
    raw = out.with_suffix(".npy")
    save_array(x, raw)
    save_figure(x, out, f"{a.sampler}, {steps} steps, eta={eta:g}, step {ck.step}")
    print(f"wrote {out} and {raw} ({x.shape[0]} samples of shape {tuple(x.shape[1:])})")
    return 0


def _eval_data(a, ck):
    """The data to compare with: --data (another path for the run's data) or the checkpoint's record."""
    name = a.data if a.data is not None else ck.data
    if name is None:
        raise CLIError(f"{ck.path} does not record its data set; pass --data (a data set name or the file it was trained on)")
    data_dir = a.data_dir or ck.meta.get("data_dir")
    gen = torch.Generator().manual_seed(a.seed + 2)

    if name in TOYS:
        n = a.n or 1000
        return name, load_dataset(name, n=2 * n, generator=gen), n
    if name not in DATASETS and not Path(name).exists():
        where = "--data" if a.data is not None else f"the run's data (recorded in {ck.path})"
        raise FileNotFoundError(2, f"{where} is not there; pass --data with its new location", name)
    kw = {"split": "all" if name == "digits" else "train"} if name in IMAGES else {}
    data = load_dataset(name, data_dir=data_dir, **kw)
    n = a.n or min(1000, data.shape[0] // 2)
    if 2 * n > data.shape[0]:
        raise CLIError(f"-n {n} is too large: the data-vs-data baseline needs 2 n items and there are {data.shape[0]}; use -n {data.shape[0] // 2} or less")
    return name, data, n


def _classifier_for(a, name):
    """The classifier for the Frechet distance, or (None, note saying why there is none)."""
    if a.classifier is not None:
        return load_classifier(a.classifier), None
    if name in SHIPPED:
        return load_classifier(name), None
    if name in CONFIGS:
        return None, f"no classifier ships for {name}: train one with `{train_command(name)}` and pass --classifier classifiers"
    return None, "no Frechet distance: a classifier needs labels, which a data file has none of (pass --classifier FILE to use one)"


def cmd_evaluate(a) -> int:
    ck, model, device, steps, eta = _load(a)
    name, data, n = _eval_data(a, ck)

    if tuple(data.shape[1:]) != item_shape(model):
        raise CLIError(f"the data have items of shape {tuple(data.shape[1:])}, the model makes {item_shape(model)}")
    clf, note = (None, None) if data.dim() == 2 else _classifier_for(a, name)
    if clf is not None and clf.item_shape != tuple(data.shape[1:]):
        raise CLIError(f"the classifier {clf.source} takes images {clf.item_shape}, the data are {tuple(data.shape[1:])}")
    x = _draw(a, ck, model, device, steps, eta, n)
    if x is None:  # another process of a torchrun job: process 0 reports
        return 0
    result = {"checkpoint": str(ck.path), "step": ck.step, "data": name, "sampler": a.sampler, "steps": steps,
              "eta": eta, "n": n, "metrics": {}}
    gen = lambda k: torch.Generator().manual_seed(a.seed + k)  # noqa: E731
    metrics = ("sliced_wasserstein", "energy") if x.dim() == 2 else ("sliced_wasserstein",)
    for metric in metrics:  # images: in pixel space, defined for every data set
        result["metrics"][metric] = distance_report(x, data, metric, generator=gen(3))
    if clf is not None:
        result["classifier"] = {"path": str(clf.source), "sha256": clf.sha256}
        result["metrics"]["frechet"] = distance_report(x, data, "frechet", generator=gen(3), classifier=clf)
        noise = torch.randn(x.shape, generator=gen(5))
        ref = data[torch.randperm(data.shape[0], generator=gen(6))[:n]]
        result["metrics"]["confident_fraction"] = {"distance": confident_fraction(x, clf), "baseline": confident_fraction(ref, clf),
                                                   "noise": confident_fraction(noise, clf)}
    if note:
        result["note"] = note
    if a.bpd:
        s = ck.schedule.to(device)
        test = load_dataset(name, n=a.bpd, generator=gen(4), data_dir=a.data_dir or ck.meta.get("data_dir"),
                            **({"split": "test"} if name in IMAGES else {}))
        with torch.no_grad():
            bpd = bits_per_dim(model, s, test.to(device), generator=torch.Generator(device=device).manual_seed(a.seed))
        result["metrics"]["bits_per_dim"] = {"mean": float(bpd.mean()), "n": int(test.shape[0])}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{ck.path} (step {ck.step}, {name}), {a.sampler} {steps} steps, eta {eta:g}, n = {n}:")
    if clf is not None:
        print(f"  classifier {clf.source} (sha256 {clf.sha256[:12]})")
    for k, v in result["metrics"].items():
        if "baseline" in v:
            label = "data" if k == "confident_fraction" else "data vs data"
            print(f"  {k:20s} {v['distance']:.5f}   ({label} {v['baseline']:.5f}; noise {v['noise']:.5f})")
        else:
            print(f"  {k:20s} {v['mean']:.4f}   (over {v['n']} held-out points)")
    if note:
        print(f"  note: {note}")
    return 0


def cmd_train_classifier(a) -> int:
    out = Path(a.out)
    _writable_dir(out, "--out")
    torch.set_num_threads(getattr(a, "threads", 1))
    model, report = train_classifier(a.data, a.epochs, a.data_dir, seed=a.seed, progress=not a.no_progress)
    report["command"] = report["command"].replace("FOLDER", str(out))
    path = save_classifier(model, report, a.data, out)

    clf = load_classifier(path)
    print(f"test accuracy {report['test_accuracy']:.4f}; wrote {path} (sha256 {clf.sha256[:12]}); "
          f"use it with: python -m ddpm evaluate --checkpoint RUN --classifier {out}")
    return 0


# ---------------------------------------------------------------------------- parser
def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m ddpm", description="Train, sample and evaluate DDPM/DDIM models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    S = SUPPRESS

    def common(q, device=True, threads_default="1 for a model under 2M parameters (the MLP), all cores for larger ones"):
        q.add_argument("--threads", type=int_at_least(1, MAX_THREADS), default=S,
                       help=f"torch CPU threads (default: {threads_default}: more threads slow a small model down)")
        q.add_argument("--no-progress", action="store_true", help="no progress bar")
        if device:
            q.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu, cuda, cuda:N")

    t = sub.add_parser("train", help="train a model; checkpoints go to --out",
                       description="Train a model. With --resume, the run's settings are read from its checkpoint.")
    t.add_argument("--data", type=user_path, default=S, help=f"{', '.join(DATASETS)}, a .npy/.npz/.csv/.txt file (points (N, d); images (N, C, H, W), "
                   "(N, H, W, C) or (N, H, W)) or a folder of PNG/JPEG images")
    t.add_argument("--data-dir", type=user_path, default=S, help="folder with the mnist / fashion-mnist / cifar10 files")
    t.add_argument("--n", "--data-size", dest="n", type=int_at_least(1, MAX_ITEMS), default=S,
                   help="toys: points drawn (default 10000); images: keep this many (under torchrun write --data-size: torchrun takes --n for its own --nnodes)")
    t.add_argument("--out", type=user_path, required=True, help="run folder for checkpoints")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest valid checkpoint, with its settings")
    t.add_argument("--checkpoint", type=user_path, default=None, help="with --resume: continue from this checkpoint file of the run instead of the newest")
    m = t.add_argument_group("model")
    m.add_argument("--model", default=S, choices=list(MODELS),
                   help="default: mlp for points, the data set's U-Net preset for its images, unet for other images")
    m.add_argument("--hidden", type=int_at_least(1, 65536), default=S, help="mlp: width (default 256)")
    m.add_argument("--layers", type=int_at_least(1, 256), default=S, help="mlp: residual blocks (default 3)")
    m.add_argument("--channels", type=int_at_least(1, 4096), default=S, help="U-Net: width of the first level")
    m.add_argument("--channel-mult", "--channel-mults", dest="channel_mult", type=int_list, default=S,
                   help="U-Net: width multiplier per level, e.g. 1,2,2 (the side must divide by 2 ** (levels - 1))")
    m.add_argument("--attention-resolutions", type=int_list, default=S, help="U-Net: level sides with self-attention, e.g. 16 or 8,4")
    m.add_argument("--res-blocks", type=int_at_least(1, 64), default=S, help="U-Net: residual blocks per level")
    m.add_argument("--dropout", type=finite_float(0.0, 0.99), default=S, help="U-Net: dropout in [0, 0.99]")
    m.add_argument("--groups", type=int_at_least(1, 4096), default=S, help="U-Net: GroupNorm groups (must divide every width)")
    m.add_argument("--heads", type=int_at_least(1, 256), default=S, help="U-Net: attention heads")
    m.add_argument("--T", type=int_at_least(2, MAX_T), default=S, help="diffusion steps T (default 1000)")
    m.add_argument("--schedule", default=S, choices=list(SCHEDULES), help="noise schedule (default linear)")
    add_train_config_flags(t, {{"toy": "points", "image": "other images"}.get(k, k): v for k, v in DEFAULTS.items()})
    common(t, device=False)
    t.set_defaults(func=cmd_train)

    for name, func, help_ in (("sample", cmd_sample, "draw samples from a checkpoint"),
                              ("evaluate", cmd_evaluate, "sample and print distances to the data, beside their baselines")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--checkpoint", type=user_path, required=True, help="a checkpoint file, or a run folder (its newest valid checkpoint)")
        s.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim"])
        s.add_argument("--steps", type=int_at_least(1, MAX_T), default=S, help="sampling steps, 1..T (default: 50 for ddim, T for ddpm)")
        s.add_argument("--eta", type=finite_float(0.0, 1.0), default=S, help="ddim only: eta in [0, 1] (0: deterministic, the default; 1: DDPM-like)")
        s.add_argument("-n", type=int_at_least(1, MAX_ITEMS), default=None if name == "evaluate" else 1000,
                       help="number of samples" + (" (default: 1000, or half the data)" if name == "evaluate" else " (default 1000)"))
        s.add_argument("--seed", type=int_at_least(0, SEED_MAX), default=0)
        s.add_argument("--batch", type=int_at_least(0, MAX_ITEMS), default=0, help="samples per block (0: 500); block j is seeded seed + j, so under torchrun the blocks are shared out among the processes and the samples are those of one process")
        s.add_argument("--raw-weights", action="store_true", help="sample with the raw weights instead of the EMA")
        s.add_argument("--fast", action="store_true", help="CUDA only: bf16 autocast + CUDA graphs for the network (ddpm.FastEps)")
        if name == "sample":
            s.add_argument("--out", type=user_path, default="samples.png", help="image file (.png, .pdf, .svg, .jpg); the raw samples go beside it as .npy")
        else:
            s.add_argument("--json", action="store_true", help="print JSON")
            s.add_argument("--data", type=user_path, default=None, help="the data to compare with (default: the checkpoint's record); e.g. the training file's new place")
            s.add_argument("--data-dir", type=user_path, default=None, help="folder with the mnist / fashion-mnist / cifar10 files")
            s.add_argument("--classifier", type=user_path, default=None, help="a classifier's .safetensors file or folder (from train-classifier) for the Frechet distance")
            s.add_argument("--bpd", type=int_at_least(0, MAX_ITEMS), default=0, metavar="N", help="also bits/dim through the full bound on N held-out points (T network calls each)")
        common(s)
        s.set_defaults(func=func)

    c = sub.add_parser("train-classifier", help="train the classifier behind the Frechet distance into --out")
    c.add_argument("--data", default="digits", choices=sorted(CONFIGS))
    c.add_argument("--epochs", type=int_at_least(1, 100_000), default=None, help="default: 30 for digits, 2 for (fashion-)mnist, 10 for cifar10")
    c.add_argument("--seed", type=int_at_least(0, SEED_MAX), default=0)
    c.add_argument("--data-dir", type=user_path, default=None)
    c.add_argument("--out", type=user_path, required=True, help="folder for classifier-<data>.safetensors and its JSON (never the package's own)")
    common(c, device=False, threads_default="1: reproducible bit for bit")
    c.set_defaults(func=cmd_train_classifier)
    return p


def main(argv=None) -> int:
    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or a one-line usage error already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return a.func(a)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error is one line unless DDPM_DEBUG=1
        if os.environ.get("DDPM_DEBUG"):
            raise
        return _report(e)


def _report(e: BaseException) -> int:
    if isinstance(e, OSError) and e.filename is not None:  # ENOSPC, EACCES, FileExistsError, ...: name the path
        msg = f"{e.strerror or type(e).__name__}: {e.filename}"
    elif isinstance(e, (CLIError, ValueError, OSError, FloatingPointError)):
        msg = str(e).strip() or type(e).__name__
    elif isinstance(e, RuntimeError):  # CUDA errors (out of memory, driver missing) and the like
        msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or ['runtime error'])[0]}"
    else:
        msg = f"internal error {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]} (DDPM_DEBUG=1 shows the traceback)"
    print(f"error: {' '.join(msg.split())}", file=sys.stderr)
    return 2
