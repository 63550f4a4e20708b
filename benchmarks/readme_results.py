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


def render() -> str:
    s = json.loads((RESULTS / "summary.json").read_text())
    src = s["sources"].get("probe_philox4") or s["sources"].get("probe_final") or s["sources"]["train_fast"]
    fd = s["fashion_fd"]
    h = s.get("history", {}).get("h100")
    c = json.loads((RESULTS / "cpu_digits.json").read_text())
    fd = s["fashion_fd"]
    lines = [
        START,
        f"GPU ({s['device']}, torch {src['torch']}, diffusers {src['diffusers']}; the DDPM CIFAR-10 network, "
        f"{s['params']['ours']:,} parameters in both implementations, batch 128, one GPU, EMA included):",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| training, same recipe for both ({s['train_same_recipe_mode']}, channels-last, fused AdamW) | ours "
        f"{s['train_ours_same_recipe_img_per_s']:,.0f} img/s, diffusers {s['train_peer_same_recipe_img_per_s']:,.0f} img/s: "
        f"**{s['train_speedup_vs_diffusers_same_recipe']:.2f}x** |",
    ]
    if "train_speedup_vs_diffusers_same_recipe_b256" in s:
        srcs = s.get("train_same_recipe_sources", {})
        apart = len({srcs.get(f"{side}:{s['train_same_recipe_mode']}:b256") for side in ("ours", "peer")}) > 1
        lines.append(
            f"| same, batch 256{' (the two sides in separate runs on the same card model)' if apart else ''} | "
            f"ours {s['train_ours_same_recipe_img_per_s_b256']:,.0f} img/s, diffusers "
            f"{s['train_peer_same_recipe_img_per_s_b256']:,.0f} img/s: {s['train_speedup_vs_diffusers_same_recipe_b256']:.2f}x "
            f"({100 * s['train_ours_mfu_vs_measured_matmul_b256']:.0f}% of the measured matrix rate) |")
    lines += [
        f"| training, `ddpm.train`'s fastest flags against diffusers without CUDA graphs ({s['train_peer_mode']}, "
        f"{s['train_peer_img_per_s']:,.0f} img/s) | {s['train_speedup_vs_diffusers']:.2f}x |",
        f"| model FLOP utilisation (training) | {100 * s['train_ours_mfu_vs_measured_matmul']:.0f}% of the card's "
        "measured bf16 matrix rate |",
        f"| DDIM-50, 256 images, bf16 | {s['ours_ddim50_s_bf16']:.2f} s; diffusers compiled with CUDA graphs "
        f"{s['peer_ddim50_s_bf16_graphs']:.2f} s ({s['ddim50_speedup_vs_diffusers']:.2f}x"
        f"{', diffusers from an earlier run on the same card model' if 'sampling_sources' in s else ''}) |",
        f"| DDPM-1000 over DDIM-50 wall time | {s['ddpm1000_over_ddim50']:.2f} (ideal 20) |",
        f"| Fashion-MNIST Frechet distance, DDIM-50 (eta 0) over DDPM-1000 | {s['fd_ddim50_over_ddpm1000']:.2f} "
        f"({fd['ddim50_eta0']:.2f} vs {fd['ddpm1000']:.2f}; data vs data {fd['data_vs_data']:.2f}; "
        f"{s['sources']['fashion']['device']}) |",
        f"| Fashion-MNIST, S = 10: eta 0 vs eta 1 | {fd['ddim10_eta0']:.2f} vs {fd['ddim10_eta1']:.2f} |",
        f"| Fashion-MNIST bits/dim (test subset) | {s['fashion_bits_per_dim']:.2f} |",
    ]
    if h:
        lines += [
            "",
            f"History: on an {h['device']} (an older version of the package and diffusers {h['sources']['train']['diffusers']}) "
            f"the same-recipe ratio was {h['train_speedup_vs_diffusers_same_recipe']:.2f}x and the ratio against diffusers "
            f"without CUDA graphs {h['train_speedup_vs_diffusers']:.2f}x.",
        ]
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
