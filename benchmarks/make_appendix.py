"""Write book/appendix_gpu.ipynb (the GPU appendix); it only reads benchmarks/results/*. Then execute it:

    python benchmarks/make_appendix.py
    jupyter nbconvert --to notebook --execute --inplace book/appendix_gpu.ipynb
"""
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s.strip()))  # noqa: E731
code = lambda s: cells.append(nbf.v4.new_code_cell(s.strip()))  # noqa: E731

md(r"""
# Appendix: the package on a GPU

The chapters run on a laptop CPU. This appendix shows the same package on one NVIDIA H100, side by side
with the library most people would use instead, Hugging Face diffusers (`UNet2DModel`, `DDPMScheduler`,
`DDIMScheduler`), and reproduces the shape of the DDIM paper's Table 1 on real images (Fashion-MNIST).

Every number below is read from the JSON files that the benchmark scripts wrote on the GPU machine
(`benchmarks/results/`), with the card, the torch version and the git commit recorded beside them;
none is typed by hand. This notebook only reads those files, so it runs on a CPU in seconds.
""")
code(r"""
import json
from pathlib import Path

from IPython.display import Image, Markdown, display

R = next(p for p in (Path("../benchmarks/results"), Path("benchmarks/results")) if p.is_dir())
def load(name):
    p = R / name
    return json.loads(p.read_text()) if p.is_file() else None

summary, train, curve, sample, fashion, fair = (load(n) for n in
    ("summary.json", "train.json", "train_curve.json", "sample.json", "fashion.json", "train_fair.json"))
def table(header, rows):
    out = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    return out + "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)
src = (summary or {}).get("sources", {})
display(Markdown(table(["run", "card", "torch", "diffusers", "commit", "when (UTC)"],
    [[k, v["device"], v["torch"], v.get("diffusers"), (v.get("commit") or "")[:12], v["time_utc"]] for k, v in src.items()])))
""")
md(r"""
## The same network twice

Our `UNet.preset("ddpm-cifar10")` and diffusers' `UNet2DModel` in the configuration of `google/ddpm-cifar10-32`
are Ho et al.'s CIFAR-10 network: channel width 128, multipliers 1, 2, 2, 2, two residual blocks per level,
attention at 16x16, dropout 0.1. Parameters and forward FLOPs (counted by `torch.utils.flop_counter` on the GPU,
batch 1, 3x32x32) agree:
""")
code(r"""
if train:
    m = train["models"]
    display(Markdown(table(["network", "parameters", "forward GFLOP / image"],
        [["ours", f"{m['ours']['params']:,}", f"{m['ours']['fwd_flops']/1e9:.2f}"],
         ["diffusers", f"{m['peer']['params']:,}", f"{m['peer']['fwd_flops']/1e9:.2f}"]])
        + f"\nRelative differences: parameters {m['params_rel_diff']:.2%}, FLOPs {m['flops_rel_diff']:.2%}."))
""")
md(r"""
## Training throughput (batch 128, 3x32x32)

Both networks run in one training step, `ddpm.loss_simple` (the core draws t and eps), backward,
gradient clipping at 1, AdamW. Warm-up steps (compilation included) are excluded; each of 5 repeats of
20 steps is timed with CUDA events; the table shows the median. TFLOP/s counts a training step as three
forward passes; MFU is that rate over the card's measured bf16 matrix-product rate.
""")
code(r"""
if train:
    rows = []
    for k, v in train["train"].items():
        who, mode = k.split(":", 1)
        rows.append([{"ours": "ours", "peer": "diffusers"}[who], mode, f"{v['img_per_s']:,.0f}", f"{v['tflops']:.0f}",
                     f"{v.get('mfu_vs_measured_matmul', float('nan')):.1%}", f"{v['warmup_s']:.0f}"])
    display(Markdown(table(["network", "mode", "images / s", "TFLOP/s", "MFU", "warm-up s"], rows)))
    b = train["best"]
    display(Markdown(f"Measured bf16 matrix rate of this card: {train['matmul_bf16_flops']/1e12:.0f} TFLOP/s. "
        f"Best diffusers mode: **{b['peer_mode']}**, {b['peer_img_per_s']:,.0f} images/s; ours: **{b['ours_mode']}**, "
        f"{b['ours_img_per_s']:,.0f} images/s: **{b['speedup']:.2f}x**."))
""")
md(r"""
What made the difference is in `benchmarks/NOTES.md`: on this machine a training step of either network
in eager mode is bound by the host launching about a thousand small kernels, not by the GPU (float32 and
bf16 run at the same speed). `torch.compile` fuses the GroupNorm/SiLU/residual element-wise work, and
CUDA graphs (`mode="reduce-overhead"`) replay the whole forward and backward with a single launch.

**The numerics stay honest.** A short real run (Fashion-MNIST padded to 32x32, three channels) from the
same initial weights and the same draws of data, t and eps, once in float32 and once in the fast mode:
""")
code(r"""
lc = (curve or {}).get("loss_curve") or (train or {}).get("loss_curve")
if lc:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for mode, c in lc["window_means"].items():
        ax.plot([lc["window"] * (i + 1) for i in range(len(c))], c, marker="o", label=mode)
    ax.set_xlabel("step"); ax.set_ylabel(f"loss, mean over {lc['window']} steps"); ax.set_yscale("log"); ax.legend()
    plt.show()
    display(Markdown(f"Largest relative difference of the windowed means: {lc['max_rel_diff_window_means']:.1%}; "
                     f"last window: {lc['final_window_rel_diff']:.1%}."))
else:
    print("train_curve.json not present: run the curve stage (see 'Reproduce').")
""")
md(r"""
## Is the comparison fair? diffusers with exactly our recipe

The headline above compares ours with CUDA graphs against diffusers in its best mode without them. On this
machine the eager step is bound by the host, so the recipe itself is worth a lot. The `fair` stage of
`benchmarks/gpu_train.py` trains diffusers' network with exactly our fastest recipe (bf16 autocast,
`torch.compile(mode="reduce-overhead")`, channels-last, fused AdamW), and ours again beside it in the same
process on the same card (warm-up excluded, median of 5 repeats of 20 steps).
""")
code(r"""
if fair and fair.get("fair", {}).get("train"):
    f = fair["fair"]
    rows = [[{"ours": "ours", "peer": "diffusers"}[w], f["mode"], f"{v['img_per_s']:,.0f}", f"{v['tflops']:.0f}",
             f"{v.get('mfu_vs_measured_matmul', float('nan')):.1%}", f"{v['warmup_s']:.0f}"] for w, v in f["train"].items()]
    display(Markdown(f"Card: {fair['env']['device']}, torch {fair['env']['torch']}, diffusers {fair['env']['diffusers']}.\n\n"
        + table(["network", "mode", "images / s", "TFLOP/s", "MFU", "warm-up s"], rows)))
    if "speedup_same_recipe" in f:
        msg = f"Same recipe: ours / diffusers = **{f['speedup_same_recipe']:.2f}x**"
        if train and "best" in train:
            msg += (f" (against diffusers' best mode without CUDA graphs, {train['best']['peer_mode']}: "
                    f"{train['best']['speedup']:.2f}x; CUDA graphs alone lift diffusers "
                    f"{f['train']['peer']['img_per_s'] / train['best']['peer_img_per_s']:.2f}x).")
        display(Markdown(msg))
else:
    print("train_fair.json not present: run the fair stage (see 'Reproduce').")
""")
md(r"""
Where the time goes in our fastest mode: `torch.profiler` over 10 training steps (the kernels inside the
CUDA-graph replays are recorded), CUDA kernels by self CUDA time per step, grouped by kernel name
(`gpu_train.kernel_bucket`); GPU-side annotations such as `Optimizer.step#AdamW.step` are left out, since
they span kernels that are counted on their own.
""")
code(r"""
if fair and "ours" in fair.get("fair", {}).get("profile", {}):
    p = fair["fair"]["profile"]["ours"]
    b = p.get("buckets_ms_per_step_excl_annotations", p["buckets_ms_per_step"])
    tot = sum(b.values())
    display(Markdown(f"Wall time {p['wall_ms_per_step']:.1f} ms/step (profiled), kernel time {tot:.1f} ms/step: "
                     f"the GPU is busy {tot / p['wall_ms_per_step']:.0%} of the step.\n\n"
        + table(["bucket", "ms / step", "share"], [[k, f"{v:.2f}", f"{v / tot:.1%}"] for k, v in b.items()])))
    top = p.get("top_excl_annotations", p["top"])
    display(Markdown(table(["kernel", "bucket", "ms / step", "launches / step", "share"],
        [[r["name"][:90].replace("|", "/").replace("<", "&lt;"), r["bucket"], f"{r['self_ms_per_step']:.3f}",
          f"{r['calls_per_step']:.0f}", f"{r['self_ms_per_step'] / tot:.1%}"] for r in top])))
    q = fair["fair"]["profile"].get("peer")
    if q:
        qb = q.get("buckets_ms_per_step_excl_annotations", q["buckets_ms_per_step"])
        qt = sum(qb.values())
        display(Markdown("diffusers in the same recipe, for comparison: " + ", ".join(
            f"{k} {v / qt:.0%}" for k, v in qb.items()) + f" of {qt:.1f} ms/step."))
""")
md(r"""
## Sampling 256 images

Ours: the core loops `ddpm.sample_ddim` / `ddpm.sample_ddpm`, unchanged, around the network wrapped by
`ddpm.fast.FastEps` (in `benchmarks/fastpath.py` when these numbers were measured) (compiled, CUDA graphs, channels-last; bf16 autocast in the bf16 rows).
diffusers: its documented loop (`set_timesteps`, then `unet(x, t).sample` and `scheduler.step`), float32
and bf16 (autocast and bf16 weights; the faster counts). Medians of repeats after a warm-up run.
""")
code(r"""
if sample:
    rows = []
    for prec, r in sample["ours"].items():
        rows.append(["ours", prec, f"{r['ddim50']['median_s']:.3f}", f"{r['ddpm1000']['median_s']:.2f}", f"{r['ddpm1000_over_ddim50']:.2f}"])
    for k, r in sample["peer"].items():
        d = r.get("ddpm1000", {}).get("median_s")
        rows.append(["diffusers", k, f"{r['ddim50']['median_s']:.3f}", f"{d:.2f}" if d else "-",
                     f"{r['ddpm1000_over_ddim50']:.2f}" if d else "-"])
    for k, r in sample.get("peer_in_our_loop", {}).items():
        rows.append(["diffusers network, our loop + FastEps", k, f"{r['ddim50']['median_s']:.3f}", "-", "-"])
    display(Markdown(table(["network", "precision", "DDIM-50 s", "DDPM-1000 s", "DDPM-1000 / DDIM-50"], rows)))
    display(Markdown("Speed-ups in the same precision: " + ", ".join(f"{k} {v:.2f}x" for k, v in sample["summary"].items())))
    if "ours_bf16_vs_fp32_rel_err_ddim50" in sample:
        display(Markdown(f"bf16 DDIM-50 output against float32 from the same x_T (random weights): relative error "
                         f"{sample['ours_bf16_vs_fp32_rel_err_ddim50']:.2e}."))
else:
    print("sample.json not present: the sampling run has not been made yet (see 'Reproduce').")
""")
md(r"""
## Quality on real images: the DDIM table on Fashion-MNIST

`UNet.preset("fashion-mnist")` trained on the 60,000 training images on the GPU within one 10-minute
command, then 10,000 samples from the EMA weights for each sampler setting (the same x_T for all), scored by
the package's Frechet distance in the features of its own Fashion-MNIST classifier against the 10,000 test
images. The data-vs-data line is 10,000 training images against the same test images: the floor.
""")
code(r"""
if fashion and fashion.get("fd"):
    fd = fashion["fd"]
    t = fashion.get("train", {})
    if "steps" in t:
        display(Markdown(f"Training: {t['steps']:,} steps of batch {t['batch']} ({t['epochs']:.0f} epochs) in "
                         f"{t['seconds_incl_compile']:.0f} s, compilation included; loss {t['loss_first_200_mean']:.3f} "
                         f"(first 200 steps) to {t['loss_last_200_mean']:.3f} (last 200)."))
    rows = []
    for S in (10, 20, 50, 100):
        rows.append([f"DDIM S = {S}"] + [f"{fd[k]:.2f}" if (k := f"ddim{S}_eta{e}") in fd else "-" for e in ("0", "0.5", "1")])
    display(Markdown(table(["sampler", "eta = 0", "eta = 0.5", "eta = 1"], rows)
        + f"\nDDPM-1000: {fd.get('ddpm1000', float('nan')):.2f}. Data vs data: {fd.get('data_vs_data', float('nan')):.2f}."))
    if "fd_ddim50_over_ddpm1000" in fashion:
        display(Markdown(f"DDIM-50 (eta 0) over DDPM-1000: **{fashion['fd_ddim50_over_ddpm1000']:.2f}**."))
    if "bits_per_dim" in fashion:
        b = fashion["bits_per_dim"]
        display(Markdown(f"Bits/dim on {b['n']} test images (float32, the full 1000-term bound): "
                         f"**{b['mean']:.3f} +- {b['sem']:.3f}**."))
    if "bf16_vs_fp32_rel_err_ddim50" in fashion:
        display(Markdown(f"bf16 sampler against float32 (DDIM-50, eta 0, same x_T, 1000 images): relative error "
                         f"{fashion['bf16_vs_fp32_rel_err_ddim50']:.2e}."))
    for name in ("fashion_ddpm1000.png", "fashion_ddim50_eta0.png", "fashion_ddim10_eta0.png", "fashion_ddim10_eta1.png"):
        if (R / name).is_file():
            display(Markdown(f"`{name}`")); display(Image(filename=str(R / name), width=280))
else:
    print("fashion.json not present: the Fashion-MNIST run has not been made yet (see 'Reproduce').")
""")
md(r"""
## Reproduce

On a machine with one CUDA GPU, from the repository root, with diffusers 0.36.0 installed
(`pip install diffusers==0.36.0`) and the Fashion-MNIST IDX files in `.carry/fashion-mnist/`
(`cp /usr/share/datasets/fashion-mnist/* .carry/fashion-mnist/` with Debian's `dataset-fashion-mnist`):

```
export GIT_COMMIT=$(git rev-parse HEAD)
python benchmarks/gpu_train.py --budget 530                      # -> train.json (throughput, FLOPs, MFU)
python benchmarks/gpu_train.py --stages curve,profile --name train_curve.json --budget 215
python benchmarks/gpu_train.py --stages fair --name train_fair.json --budget 375  # -> same recipe + profile
python benchmarks/gpu_sample.py --budget 345 --ddpm-repeats 1     # -> sample.json
python benchmarks/gpu_fashion.py --train-seconds 240 --budget 570 # -> fashion.json, grids, EMA weights
python benchmarks/summarize.py                                    # -> summary.json
python benchmarks/make_appendix.py && jupyter nbconvert --to notebook --execute --inplace book/appendix_gpu.ipynb
```

Each script writes to `$OUT` if set (the lent GPU machine of this project), else to `benchmarks/results/`.
The log of what each optimisation predicted and what it measured is `benchmarks/NOTES.md`.
""")
code(r"""
if summary:
    display(Markdown(table(["target (issue 6)", "met"], [[k, "yes" if v else "**no**"] for k, v in summary["targets_met"].items()])))
""")
nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
nbf.write(nb, ROOT / "book" / "appendix_gpu.ipynb")
print("wrote", ROOT / "book" / "appendix_gpu.ipynb")
