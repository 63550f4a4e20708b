"""Build ``benchmarks/results/summary.json`` from the JSON files the device runs wrote (CPU, seconds).

    python benchmarks/summarize.py

Reads train.json, train_fair.json, train_curve.json, sample.json, fashion.json under benchmarks/results/ (whichever exist)
and writes the headline numbers with the targets of issue 6 beside them. Nothing here is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name):
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def main() -> dict:
    train, curve, sample, fashion = (load(n) for n in ("train.json", "train_curve.json", "sample.json", "fashion.json"))
    fair = load("train_fair.json")
    s: dict = {"sources": {}}
    for name, d in (("train", train), ("train_fair", fair), ("train_curve", curve), ("sample", sample),
                    ("fashion", fashion)):
        if d:
            e = d["env"]
            s["sources"][name] = {k: e.get(k) for k in ("device", "torch", "cuda", "diffusers", "commit", "time_utc")}
    devices = {v["device"] for v in s["sources"].values()}
    s["device"] = devices.pop() if len(devices) == 1 else sorted(devices)
    targets = {}
    if train and "best" in train:
        b = train["best"]
        s["train_speedup_vs_diffusers"] = b["speedup"]
        s["train_ours_img_per_s"] = b["ours_img_per_s"]
        s["train_ours_mode"] = b["ours_mode"]
        s["train_peer_img_per_s"] = b["peer_img_per_s"]
        s["train_peer_mode"] = b["peer_mode"]
        s["train_ours_tflops"] = train["train"][f"ours:{b['ours_mode']}"]["tflops"]
        s["train_ours_mfu_vs_measured_matmul"] = train["train"][f"ours:{b['ours_mode']}"].get("mfu_vs_measured_matmul")
        s["train_ours_mfu_vs_datasheet"] = train["train"][f"ours:{b['ours_mode']}"].get("mfu_vs_datasheet")
        s["params"] = {k: train["models"][k]["params"] for k in ("ours", "peer")}
        s["fwd_gflops"] = {k: train["models"][k]["fwd_flops"] / 1e9 for k in ("ours", "peer")}
        targets["train_speedup >= 1.5"] = b["speedup"] >= 1.5
        targets["params and FLOPs within 2%"] = (train["models"]["params_rel_diff"] <= 0.02
                                                 and train["models"]["flops_rel_diff"] <= 0.02)
    f = (fair or {}).get("fair", {})
    if "peer" in f.get("train", {}) and "ours" in f.get("train", {}):
        # the same recipe (bf16 + compile with CUDA graphs + channels-last + fused AdamW) for both networks,
        # measured in one process on one card: ours re-measured there is the baseline of the ratio
        s["train_same_recipe_mode"] = f["mode"]
        s["train_peer_same_recipe_img_per_s"] = f["train"]["peer"]["img_per_s"]
        s["train_ours_same_recipe_img_per_s"] = f["train"]["ours"]["img_per_s"]
        s["train_speedup_vs_diffusers_same_recipe"] = f["train"]["ours"]["img_per_s"] / f["train"]["peer"]["img_per_s"]
        prof = f.get("profile", {}).get("ours")
        if prof:
            s["train_ours_profile_buckets_share"] = prof.get("buckets_share_excl_annotations", prof["buckets_share"])
            s["train_ours_profile_gpu_busy_share"] = prof.get("gpu_busy_share_excl_annotations", prof["gpu_busy_share"])
    lc = (curve or {}).get("loss_curve") or (train or {}).get("loss_curve")
    if lc:
        s["loss_curve_max_rel_diff_window_means"] = lc["max_rel_diff_window_means"]
        s["loss_curve_final_window_rel_diff"] = lc["final_window_rel_diff"]
    if sample and sample.get("summary"):
        sm = sample["summary"]
        for prec in ("bf16", "fp32"):
            if f"ddim50_speedup_{prec}" in sm:
                s[f"ddim50_speedup_vs_diffusers_{prec}"] = sm[f"ddim50_speedup_{prec}"]
                targets[f"ddim50 {prec} at most half the peer's time"] = sm[f"ddim50_speedup_{prec}"] >= 2.0
            if prec in sample["ours"]:
                s[f"ddpm1000_over_ddim50_{prec}"] = sample["ours"][prec]["ddpm1000_over_ddim50"]
                s[f"ours_ddim50_s_{prec}"] = sample["ours"][prec]["ddim50"]["median_s"]
                s[f"ours_ddpm1000_s_{prec}"] = sample["ours"][prec]["ddpm1000"]["median_s"]
                targets[f"ddpm1000/ddim50 {prec} >= 19.5"] = sample["ours"][prec]["ddpm1000_over_ddim50"] >= 19.5
        key = "bf16" if "ddim50_speedup_vs_diffusers_bf16" in s else "fp32"
        if f"ddim50_speedup_vs_diffusers_{key}" in s:
            s["ddim50_speedup_vs_diffusers"] = s[f"ddim50_speedup_vs_diffusers_{key}"]
        if f"ddpm1000_over_ddim50_{key}" in s:
            s["ddpm1000_over_ddim50"] = s[f"ddpm1000_over_ddim50_{key}"]
        if "ours_bf16_vs_fp32_rel_err_ddim50" in sample:
            s["cifar_random_weights_bf16_vs_fp32_rel_err_ddim50"] = sample["ours_bf16_vs_fp32_rel_err_ddim50"]
    if fashion:
        fd = fashion.get("fd", {})
        s["fashion_fd"] = fd
        if "fd_ddim50_over_ddpm1000" in fashion:
            s["fd_ddim50_over_ddpm1000"] = fashion["fd_ddim50_over_ddpm1000"]
            targets["FD ddim50 eta0 within 15% of DDPM-1000"] = fashion["fd_ddim50_over_ddpm1000"] <= 1.15
        if "ddim10_eta0" in fd and "ddim10_eta1" in fd:
            s["fd_ddim10_eta1_over_eta0"] = fd["ddim10_eta1"] / fd["ddim10_eta0"]
            targets["S=10: eta 0 clearly better than eta 1"] = fd["ddim10_eta0"] < 0.8 * fd["ddim10_eta1"]
        if "bits_per_dim" in fashion:
            s["fashion_bits_per_dim"] = fashion["bits_per_dim"]["mean"]
        if "bf16_vs_fp32_rel_err_ddim50" in fashion:
            s["fashion_bf16_vs_fp32_rel_err_ddim50"] = fashion["bf16_vs_fp32_rel_err_ddim50"]
        if fashion.get("train"):
            s["fashion_train_seconds"] = fashion["train"].get("seconds_incl_compile")
    s["targets_met"] = targets
    (RESULTS / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    return s


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=1)
