"""Render the README's results section from the committed JSON (nobody types a measured number).

    python -m benchmarks.readme_results          # rewrite the block in README.md
    python -m benchmarks.readme_results --check  # exit 1 if README.md is out of date

tests/test_readme.py runs the check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start (made by benchmarks/readme_results.py) -->", "<!-- results:end -->"


def _load(name: str):
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def gpu_lines() -> list[str]:
    """The GPU rows, from the one same-process comparison (``gpu_before_after.json``) and the Fashion-MNIST run."""
    ba, fa = _load("before_after.json"), _load("fashion.json")
    lines = []
    if ba:
        e, s, tr = ba["env"], ba.get("summary", {}), ba.get("train", {})
        m = ba.get("models", {})
        lines += [f"GPU ({e['device']}, torch {e['torch']}, diffusers {e.get('diffusers')}; the DDPM CIFAR-10 network"
                  + (f", {m['ours']['params']:,} parameters in both implementations" if m else "")
                  + ", batch 128, one GPU, EMA included; every row from one process):", "",
                  "| measurement | result |", "|---|---|"]
        u = s.get("train:bf16+compile", {})
        if "peer" in u:
            lines.append(f"| training, `--bf16 --compile` against diffusers' bf16 + `torch.compile` | ours "
                         f"{u['after']:,.0f} img/s, diffusers {u['peer']:,.0f} img/s: **{u['after_over_peer']:.2f}x** |")
        f = s.get("train:bf16+compile+cudagraphs+channels-last", {})
        if "peer" in f and "train:user_flags_over_peer_fastest" in s:
            lines.append(f"| training, `--bf16 --compile` against diffusers' fastest mode (CUDA graphs, channels-last, "
                         f"fused AdamW: {f['peer']:,.0f} img/s) | {s['train:user_flags_over_peer_fastest']['ratio']:.2f}x |")
        mfu = [r.get("mfu_vs_measured_matmul") for r in tr.get("after:bf16+compile", [])]
        if mfu and mfu[0]:
            lines.append(f"| model FLOP utilisation (training, `--bf16 --compile`) | {100 * max(mfu):.0f}% of the card's "
                         f"measured bf16 matrix rate ({ba['matmul_bf16_flops'] / 1e12:.0f} TFLOP/s) |")
        d = s.get("ddim", {})
        if "after" in d:
            row = f"| DDIM-50, 256 images, bf16 (`FastEps`) | {d['after']:.3f} s"
            if "peer" in d:
                row += f"; diffusers compiled with CUDA graphs {d['peer']:.3f} s ({d['after_time_over_peer']:.2f}x its time)"
            lines.append(row + " |")
        if "after_over_before" in u:
            lines.append(f"| this version against the previous one, `--bf16 --compile` | {u['before']:,.0f} -> "
                         f"{u['after']:,.0f} img/s ({u['after_over_before']:.2f}x) |")
        if "after_over_before" in f:
            lines.append(f"| the same, the previous version's fastest flags | {f['before']:,.0f} -> {f['after']:,.0f} "
                         f"img/s ({f['after_over_before']:.2f}x) |")
        if "before_over_after" in d:
            lines.append(f"| the same, DDIM-50 | {d['before']:.3f} -> {d['after']:.3f} s ({d['before_over_after']:.2f}x) |")
        lc = ba.get("loss_curve")
        if lc:
            lines.append(f"| loss curve, fp32 eager against `--bf16 --compile` ({lc['steps']} steps, same start and draws) | "
                         f"window means within {100 * lc['max_rel_diff_window_means']:.1f}% |")
    if not ba:
        lines += ["GPU speed of this version: not measured yet (the book's GPU appendix gives the earlier version's "
                  "figures).", ""]
    if fa:
        fd = fa["fd"]
        if not ba:
            lines += ["| measurement | result |", "|---|---|"]
        lines += [
            f"| Fashion-MNIST Frechet distance, DDIM-50 (eta 0) over DDPM-1000 | {fa['fd_ddim50_over_ddpm1000']:.2f} "
            f"({fd['ddim50_eta0']:.2f} vs {fd['ddpm1000']:.2f}; data vs data {fd['data_vs_data']:.2f}; "
            f"{fa['env']['device']}) |",
            f"| Fashion-MNIST, S = 10: eta 0 vs eta 1 | {fd['ddim10_eta0']:.2f} vs {fd['ddim10_eta1']:.2f} |",
        ]
        bpd = fa.get("bits_per_dim", {})
        if isinstance(bpd, dict) and "mean" in bpd:
            lines.append(f"| Fashion-MNIST bits/dim ({bpd['n']} test images) | {bpd['mean']:.2f} |")
    return lines


def render() -> str:
    c = json.loads((RESULTS / "cpu_digits.json").read_text())
    lines = [START, *gpu_lines()]
    e = next(v for v in c['evaluations'] if v['step'] == c['recognisable_at_step'])
    lines += [
        "",
        f"CPU ({c['machine']['cpu_count']} cores, torch {c['machine']['torch']}, {c['machine']['torch_threads']} "
        f"thread{'s' if c['machine']['torch_threads'] != 1 else ''}): "
        f"the digits U-Net trains at {c['steps_per_sec']:.1f} steps/s (batch {c['train_config']['batch_size']}). "
        f"After {e['step']} steps ({e['train_seconds'] / 60:.1f} minutes) {e['confident_fraction']:.0%} of "
        f"{c.get('samples', 200)} DDIM-50 (eta 0) EMA samples are classified with confidence > 0.9 by the shipped digits "
        f"classifier (real test digits {c['real_digits_confident_fraction']:.0%}, Gaussian noise "
        f"{c['noise_confident_fraction']:.0%}), and their Frechet distance in its features is {e['frechet']:.1f} "
        f"(data vs data {e['frechet_data_vs_data']:.1f}, noise {e['frechet_noise']:.0f}; the reference set includes the "
        f"training digits, so these numbers cannot show memorisation: the book's chapter 7 checks for near-copies).",
    ]
    timing = RESULTS / "book_timing.json"
    if timing.exists():
        b = json.loads(timing.read_text())
        slowest = max(b["notebooks"], key=lambda r: r["seconds"])
        lines += [
            "",
            f"The whole book executes in {b['total_seconds'] / 60:.1f} minutes on {b['machine']['cpu_count']} CPU cores "
            f"(limit {b['limit_seconds'] // 60}); the slowest notebook is `{slowest['notebook']}` at "
            f"{slowest['seconds']:.0f} s ([`benchmarks/results/book_timing.json`](benchmarks/results/book_timing.json)).",
        ]
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print("README.md has no results block", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + render() + tail
    if "--check" in sys.argv:
        if new != text:
            print("README.md's results block is out of date: run python -m benchmarks.readme_results", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
