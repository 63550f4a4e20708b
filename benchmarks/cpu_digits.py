"""CPU benchmark: training speed of the digits U-Net preset, and when its samples become recognisable.

    python benchmarks/cpu_digits.py [--threads 2] [--max-minutes 6] [--eval-every 250]

Trains ``UNet.preset("digits")`` on scikit-learn's digits with ``ddpm.train`` (the CLI defaults for
digits: batch 128, lr 1e-3, warm-up 200, EMA 0.9999 with warm-up), on the CPU. Every
``--eval-every`` steps it draws 200 DDIM samples (50 steps, eta 0) from the EMA weights and judges
them with the shipped digits classifier (``ddpm/weights/classifier-digits.safetensors``):

- recognisable := at least 80% of the samples are classified with confidence > 0.9
  (real digits score ~0.97 on the same test);
- alongside, the Frechet distance in the classifier's features to 200 real digits, and the
  data-vs-data value at the same size.

Writes ``benchmarks/results/cpu_digits.json`` (steps/s, the step and wall time at which samples first
became recognisable, each evaluation, machine info) and ``benchmarks/results/cpu_digits.png``
(a sample grid at the end). Wall times are training time only (evaluations excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import ddpm
if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment  # noqa: E402
from ddpm.features import confident_fraction
from ddpm.plotting import save_figure
from ddpm.metrics import distance_report

HERE = Path(__file__).resolve().parent


def noise_confident_fraction(n: int) -> float:
    """The confident fraction of ``n`` Gaussian-noise images clamped to [-1, 1], as the samples are: the
    score a sampler gets for drawing nothing at all (the baseline the criterion must be read against)."""
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    return confident_fraction(x, "digits", 0.9)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=6.0, help="stop training after this much training time")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--max-steps", type=int, default=10000)
    p.add_argument("--extra-evals", type=int, default=1, help="evaluations to run after the first recognisable one")
    p.add_argument("--batch-size", type=int, default=128, help="128: the CLI default for digits")
    p.add_argument("--samples", type=int, default=200, help="DDIM samples per evaluation")
    p.add_argument("--speed-steps", type=int, default=8, help="steps timed per batch size before the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--baselines-only", action="store_true",
                   help="only (re)compute the Gaussian-noise baseline of the confident fraction into an existing cpu_digits.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.baselines_only:
        path = Path(a.out) / "cpu_digits.json"
        result = json.loads(path.read_text())
        result["noise_confident_fraction"] = noise_confident_fraction(result.get("samples", a.samples))
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"Gaussian noise: {result['noise_confident_fraction']:.1%} classified with confidence > 0.9")
        return 0
    load_start = os.getloadavg()[0]

    data = ddpm.load_dataset("digits")  # the 1437-image training split
    ref_all = ddpm.load_dataset("digits", split="all")
    s = ddpm.Schedule.linear(1000)
    with torch.random.fork_rng():
        torch.manual_seed(a.seed)
        model = ddpm.UNet.preset("digits")
    n_params = sum(q.numel() for q in model.parameters())
    real_conf = confident_fraction(ddpm.load_dataset("digits", split="test"), "digits")

    # Speed at the CLI's default batch (128) and at the batch of this run, on a throw-away copy.
    # On a shared machine 2 threads can be far slower than 1 (OpenMP threads wait for each other), so both are timed.
    speed = {}
    for th in (1, 2):
        torch.set_num_threads(th)
        for bs in sorted({32, 128, a.batch_size}):
            with torch.random.fork_rng():
                torch.manual_seed(a.seed)
                m = ddpm.UNet.preset("digits")
            r = ddpm.train(m, s, data, ddpm.TrainConfig(steps=a.speed_steps, batch_size=bs, device="cpu", log_every=4), progress=False)
            speed[f"threads={th},batch={bs}"] = round(r.steps_per_sec, 3)
            print(f"threads {th}, batch {bs}: {r.steps_per_sec:.2f} steps/s", flush=True)
    torch.set_num_threads(a.threads)

    evals, first = [], None
    train_seconds, step = 0.0, 0
    with tempfile.TemporaryDirectory() as run:
        while step < a.max_steps and train_seconds < a.max_minutes * 60:
            target = step + a.eval_every
            cfg = ddpm.TrainConfig(steps=target, batch_size=a.batch_size, lr=1e-3, warmup=200, seed=a.seed,
                                   checkpoint_every=0, keep_checkpoints=1, device="cpu", log_every=50)
            r = ddpm.train(model, s, data, cfg, out_dir=run, progress=False, resume=step > 0)
            train_seconds += r.seconds
            step = r.step
            g = torch.Generator().manual_seed(1)
            x = ddpm.sample_ddim(r.ema, s, (a.samples, 1, 8, 8), steps=50, generator=g, progress=False).clamp(-1, 1)
            conf = confident_fraction(x, "digits", 0.9)
            fd = distance_report(x, ref_all, "frechet", generator=torch.Generator().manual_seed(2), classifier="digits")
            e = {"step": step, "train_seconds": round(train_seconds, 1), "loss_last100": sum(r.losses[-100:]) / 100,
                 "confident_fraction": conf, "frechet": fd["distance"], "frechet_data_vs_data": fd["baseline"],
                 "frechet_noise": fd["noise"], "steps_per_sec": r.steps_per_sec}
            evals.append(e)
            print(json.dumps(e), flush=True)
            if first is None and conf >= 0.8:
                first = e
            if first is not None and len(evals) - evals.index(first) > a.extra_evals:
                break
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        save_figure(x[:100], out / "cpu_digits.png", f"digits U-Net, step {step}, DDIM 50 (EMA); {conf:.0%} confidently classified")

    result = {
        "benchmark": "cpu_digits",
        "what": "UNet.preset('digits') trained by ddpm.train on scikit-learn digits (1437 train images), CPU",
        "recognisable_criterion": f">= 80% of {a.samples} DDIM-50 (eta 0) EMA samples classified with confidence > 0.9 by the shipped digits classifier",
        "real_digits_confident_fraction": real_conf,
        "noise_confident_fraction": noise_confident_fraction(a.samples),
        "samples": a.samples,
        "frechet_reference": "all 1797 digits (it includes the 1437 training digits)",
        "train_config": {"batch_size": a.batch_size, "lr": 1e-3, "warmup": 200, "ema_decay": 0.9999, "T": 1000, "schedule": "linear"},
        "parameters": n_params,
        "steps_per_sec": step / train_seconds,
        "steps_per_sec_by_threads_and_batch": speed,
        "recognisable_at_step": first["step"] if first else None,
        "recognisable_at_train_seconds": first["train_seconds"] if first else None,
        "total_steps": step,
        "total_train_seconds": round(train_seconds, 1),
        "evaluations": evals,
        "machine": {
            **environment("cpu"),
            "torch_threads": a.threads,
            "load_average_1min_at_start": load_start,
            "load_average_1min_at_end": os.getloadavg()[0],
            "note": "a shared 2-core machine: other jobs ran at the same time, so these times are upper bounds",
        },
        "command": "python benchmarks/cpu_digits.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "cpu_digits.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['steps_per_sec']:.2f} steps/s; recognisable at step {result['recognisable_at_step']} "
          f"({result['recognisable_at_train_seconds']} s of training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
