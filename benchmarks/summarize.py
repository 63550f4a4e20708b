"""Build ``benchmarks/results/summary.json`` from the JSON files the device runs wrote (CPU, seconds).

    python -m benchmarks.summarize

Reads under ``benchmarks/results/`` (whichever exist): ``train.json`` (eager and compiled recipes, both
sides), ``train_fast_prev.json`` (the fastest recipes of the package's previous version, the whole-step
graph), ``train_fast_nhwc_gn.json`` (diffusers in the fastest recipe at batch 128 and 256; ours with the NHWC
GroupNorm switch on; the sync count; the loss curve), ``train_fast.json`` (ours, the package's fastest flags,
batch 128 and 256), ``train_profile.json`` (the kernel profile of that step), ``probe.json`` (the A/B of the
layout switches, diffusers in the same process), ``probe_sources.json`` (where the remaining copies come
from), ``probe_triton.json`` (the first Triton GroupNorm kernels against the compiler's), ``probe_final.json``
and ``probe_final_base.json`` (the package's final step with its Triton GroupNorm kernels, diffusers in the
same process, and the compiler's GroupNorm on the same machine), ``train_final.json`` (the final step at batch
256, the loss curve, the matrix rate), ``gn_tune.json`` (those kernels alone, a grid of launch settings),
``probe_v2_sources.json`` (the profile of that step), ``probe_philox4.json`` (the package's current step: one
Philox call per four dropout elements and dense skip-connection gradients, diffusers in the same process, the
profile), ``train_b256_peer.json`` and ``train_b256.json`` (batch 256, diffusers and ours, one after the other on
the same machine; the loss curve), ``sample.json`` and ``sample_triton_gn.json`` (sampling: diffusers and the
earlier package; the package with and without its Triton GroupNorm), ``fashion.json`` and the CUDA test logs;
keeps the earlier card's summary as labelled history (``results/h100/summary.json``). A later file's row
replaces an earlier one of the same label; ours with the NHWC GroupNorm switch, and ours before the Triton
GroupNorm kernels (``train_fast.json``), are relabelled. Nothing here is typed by hand.
"""

from __future__ import annotations

import json
import re
import sys

from .common import RESULTS, write_json

FASTEST = "bf16+compile+cudagraphs"  # the same recipe on both sides
PEER_USUAL = ("fp32", "bf16", "bf16+compile")  # diffusers as usually run: without CUDA graphs
DATASHEET_BF16_DENSE = 989e12  # NVIDIA H100 / H200 SXM datasheet, dense bf16 tensor-core FLOP/s


def load(name):
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def train_rows(*records) -> dict:
    """``label -> row`` over several train records; each row remembers which file it came from."""
    rows = {}
    for name, d in records:
        for label, r in (d or {}).get("train", {}).items():
            rows[label] = dict(r, source=name)
    return rows


def pytest_counts(text: str) -> dict:
    """``{"passed": n, "failed": m, ...}`` from pytest's last summary line."""
    last = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", last[-1])} if last else {}


def relabel(d, old: str, new: str):
    """``d`` with its ``train`` rows whose label starts with ``old`` renamed to start with ``new``."""
    if not d:
        return d
    return dict(d, train={(new + k[len(old):] if k.startswith(old) else k): v for k, v in d["train"].items()})


def final_rows(final, flops: float | None, matmul: float | None) -> dict:
    """The final step at batch 128 and diffusers in the same process (``probe_final.json``), as train rows."""
    out = {}
    for label, key in ((f"ours:{FASTEST}:b128", "triton_gn"), (f"peer:{FASTEST}:b128", "peer:force_layout_opt=False")):
        r = (final or {}).get("train", {}).get(key)
        if r:
            r = dict(r)
            if flops:
                r["tflops"] = 3 * flops * r["img_per_s"] / 1e12
                if matmul:
                    r["mfu_vs_measured_matmul"] = r["tflops"] * 1e12 / matmul
            out[label] = r
    return {"train": out}


def test_log(text: str) -> dict:
    """A CUDA test log: pytest's counts, and the card, torch, commit and tests of its ``key: value`` header lines."""
    head = {}
    for ln in text.splitlines():
        if not re.match(r"[a-z]+: ", ln):
            break
        k, v = ln.split(": ", 1)
        head[k] = v
    if "device" in head:  # the header's other name for the card
        head.setdefault("card", head.pop("device"))
    return {**pytest_counts(text), **{k: head[k] for k in ("card", "torch", "commit", "tests") if k in head}}


def main() -> dict:
    train, prev, gn, fast, prof_rec, probe, sample, fashion = (load(n) for n in (
        "train.json", "train_fast_prev.json", "train_fast_nhwc_gn.json", "train_fast.json", "train_profile.json",
        "probe.json", "sample.json", "fashion.json"))
    final, final_base, train_final, probe_v1, probe_src = (load(n) for n in (
        "probe_final.json", "probe_final_base.json", "train_final.json", "probe_triton.json", "probe_sources.json"))
    probe4, train4, train4_ours, sample4, v2_src, tune = (load(n) for n in (
        "probe_philox4.json", "train_b256_peer.json", "train_b256.json", "sample_triton_gn.json", "probe_v2_sources.json",
        "gn_tune.json"))
    s: dict = {"sources": {}}
    for name, d in (("train", train), ("train_fast_prev", prev), ("train_fast_nhwc_gn", gn), ("train_fast", fast),
                    ("train_profile", prof_rec), ("probe", probe), ("probe_sources", probe_src),
                    ("probe_triton", probe_v1), ("probe_final", final), ("probe_final_base", final_base),
                    ("train_final", train_final), ("gn_tune", tune), ("probe_v2_sources", v2_src), ("probe_philox4", probe4),
                    ("train_b256_peer", train4), ("train_b256", train4_ours), ("sample", sample), ("sample_triton_gn", sample4),
                    ("fashion", fashion)):
        if d:
            e = d["env"]
            s["sources"][name] = {k: e.get(k) for k in ("device", "torch", "cuda", "diffusers", "commit", "time_utc")}
    speed = [v["device"] for k, v in s["sources"].items() if k != "fashion"]
    s["device"] = speed[0] if len(set(speed)) == 1 else sorted(set(speed))
    targets = {}
    if gn:  # ours there ran with the NHWC GroupNorm switch on: keep it under its own label
        gn = dict(gn, train={(k.replace(f"ours:{FASTEST}:", f"ours:{FASTEST}+nhwc-groupnorm:") if k.startswith("ours:") else k): v
                             for k, v in gn["train"].items()})
    fast = relabel(fast, f"ours:{FASTEST}:", f"ours:{FASTEST}+inductor-groupnorm:")  # before the Triton kernels
    models = (train4_ours or train_final or fast or train or {}).get("models")
    matmul = (train4_ours or train_final or fast or {}).get("matmul_bf16_flops")
    flops = models["ours"]["fwd_flops"] if models else None
    fin, fin4 = final_rows(final, flops, matmul), final_rows(probe4, flops, matmul)
    rows = train_rows(("train.json", train), ("train_fast_prev.json", prev), ("train_fast_nhwc_gn.json", gn),
                      ("train_fast.json", fast), ("train_final.json", train_final), ("probe_final.json", fin),
                      ("train_b256_peer.json", train4), ("train_b256.json", train4_ours), ("probe_philox4.json", fin4))
    if models:
        s["params"] = {k: models[k]["params"] for k in ("ours", "peer")}
        s["fwd_gflops"] = {k: models[k]["fwd_flops"] / 1e9 for k in ("ours", "peer")}
        targets["params and FLOPs within 2%"] = all(
            abs(models["ours"][k] - models["peer"][k]) <= 0.02 * models["peer"][k] for k in ("params", "fwd_flops"))
    s["train_img_per_s"] = {k: v["img_per_s"] for k, v in rows.items()}
    s["train_table"] = [{"label": k, "img_per_s": v["img_per_s"], "tflops": v.get("tflops"),
                         "mfu_vs_measured_matmul": v.get("mfu_vs_measured_matmul"), "source": v["source"]}
                        for k, v in rows.items() if "nhwc-groupnorm" not in k and "whole-step" not in k]
    if matmul:
        s["matmul_bf16_tflops"] = matmul / 1e12
    if f"ours:{FASTEST}:b128" in rows:
        o = rows[f"ours:{FASTEST}:b128"]
        s.update(train_ours_mode=FASTEST, train_ours_img_per_s=o["img_per_s"], train_ours_tflops=o["tflops"],
                 train_ours_mfu_vs_measured_matmul=o["mfu_vs_measured_matmul"],
                 train_ours_mfu_vs_datasheet=o["tflops"] * 1e12 / DATASHEET_BF16_DENSE)
        targets["MFU >= 30% (measured matmul rate)"] = o["mfu_vs_measured_matmul"] >= 0.30
        usual = {m: rows[f"peer:{m}:b128"]["img_per_s"] for m in PEER_USUAL if f"peer:{m}:b128" in rows}
        if usual:
            best = max(usual, key=usual.get)
            s.update(train_peer_mode=best, train_peer_img_per_s=usual[best],
                     train_speedup_vs_diffusers=o["img_per_s"] / usual[best])
            targets["fastest >= 2x diffusers' bf16+compile"] = s["train_speedup_vs_diffusers"] >= 2.0
        for batch in (128, 256):
            p, ob = rows.get(f"peer:{FASTEST}:b{batch}"), rows.get(f"ours:{FASTEST}:b{batch}")
            if not (p and ob):
                continue
            sfx = "" if batch == 128 else f"_b{batch}"
            s.update({f"train_ours_same_recipe_img_per_s{sfx}": ob["img_per_s"],
                      f"train_peer_same_recipe_img_per_s{sfx}": p["img_per_s"],
                      f"train_speedup_vs_diffusers_same_recipe{sfx}": ob["img_per_s"] / p["img_per_s"]})
            if batch == 128:
                s["train_same_recipe_mode"] = FASTEST
            else:
                s[f"train_ours_img_per_s{sfx}"] = ob["img_per_s"]
                s[f"train_ours_tflops{sfx}"] = ob["tflops"]
                s[f"train_ours_mfu_vs_measured_matmul{sfx}"] = ob["mfu_vs_measured_matmul"]
                targets[f"MFU >= 30% (measured matmul rate), batch {batch}"] = ob["mfu_vs_measured_matmul"] >= 0.30
            targets[f"fastest >= 1.5x diffusers, same recipe, batch {batch}"] = ob["img_per_s"] / p["img_per_s"] >= 1.5
        s["train_same_recipe_peer_source"] = rows.get(f"peer:{FASTEST}:b128", {}).get("source")
        s["train_same_recipe_sources"] = {k: rows[k]["source"] for k in rows if k.endswith((f"{FASTEST}:b128", f"{FASTEST}:b256"))}
    if final and final_base and probe_v1:  # the GroupNorm kernels: the compiler's against the package's Triton ones
        v = {"compiler's GroupNorm (layout planning on)": final_base["train"]["layout_opt"]["img_per_s"],
             "Triton GroupNorm, first version (group tiles)": probe_v1["train"]["triton_gn"]["img_per_s"],
             "compiler's GroupNorm, same process as the first version": probe_v1["train"]["layout_opt"]["img_per_s"],
             "Triton GroupNorm (the package)": final["train"]["triton_gn"]["img_per_s"]}
        s["train_triton_groupnorm_gain"] = (v["Triton GroupNorm (the package)"]
                                            / v["compiler's GroupNorm (layout planning on)"])
        if probe4:
            v["Triton GroupNorm, second version (one Philox call per element)"] = v.pop("Triton GroupNorm (the package)")
            v["Triton GroupNorm (the package: one Philox call per four elements), dense skip gradients"] = (
                probe4["train"]["triton_gn"]["img_per_s"])
            s["train_philox4_and_skip_gradients_gain"] = (probe4["train"]["triton_gn"]["img_per_s"]
                                                          / final["train"]["triton_gn"]["img_per_s"])
        s["train_groupnorm_variants_img_per_s"] = v
        s["train_triton_groupnorm_v1_gain"] = (v["Triton GroupNorm, first version (group tiles)"]
                                               / v["compiler's GroupNorm, same process as the first version"])
        cs = probe_v1.get("copy_sources", {}).get("triton_gn")
        if cs:
            s["train_triton_v1_buckets_ms_per_step"] = cs["buckets_ms_per_step"]
            mine = ("_stats_kernel", "_fwd_kernel", "_bwd_reduce_kernel", "_bwd_apply_kernel")
            s["train_triton_v1_kernels_ms_per_step"] = {k["name"]: k["ms_per_step"] for k in cs["kernels"]
                                                        if k["name"] in mine}
    if v2_src and probe4 and probe4.get("copy_sources"):  # the step's kernels without CUDA graphs, before and after
        before, after = v2_src["copy_sources"]["triton_gn"], probe4["copy_sources"]["triton_gn"]
        s["train_no_graphs_buckets_ms_per_step"] = {"before": before["buckets_ms_per_step"],
                                                    "after": after["buckets_ms_per_step"]}
        s["copy_ms_per_step_before_skip_gradients"] = before["copy_ms_per_step"]
        s["copy_ms_per_step_before_skip_gradients_in_convolution_backward"] = sum(
            r["ms_per_step"] for r in before["sources"] if "convolution_backward" in r["chain"])
        s["copy_ms_per_step_final"] = after["copy_ms_per_step"]
        s["triton_groupnorm_ms_per_step"] = {k: d["buckets_ms_per_step"]["Triton GroupNorm (package)"]
                                             for k, d in (("before", before), ("after", after))}
        # the forward pass's matrix kernels in that step (convolution fprop, attention fprop): a floor for sampling
        s["train_forward_matrix_kernels_ms_per_step"] = sum(k["ms_per_step"] for k in after["kernels"]
                                                            if "fprop" in k["name"])
        s["train_forward_matrix_kernels_batch"] = probe4["config"]["batch"]
    if tune and tune.get("per_step_ms"):  # the second version's kernels alone, forward + backward, CUDA graphs
        t = tune["per_step_ms"]
        s["gn_tune_ms_per_step"] = {k: t[k] for k in ("default", "best_single_setting", "best_per_shape")}
        s["gn_tune_best_single_setting"] = tune["best_single_setting"]
        s["gn_tune_min_gb_per_step"] = tune["min_bytes_per_step"] / 1e9
        s["gn_tune_batch"] = tune["batch"]
    if probe_src:
        cs = probe_src["copy_sources"]["layout_opt"]
        s["copy_ms_per_step_after"] = cs["copy_ms_per_step"]
        s["copy_ms_per_step_after_to_copies_in_convolution_backward"] = sum(
            r["ms_per_step"] for r in cs["sources"] if "convolution_backward" in r["chain"] and "aten::to" in r["chain"])
    if probe and probe.get("train"):
        pt = probe["train"]
        s["probe_img_per_s"] = {k: v["img_per_s"] for k, v in pt.items()}
        if "layout_opt" in pt and "peer:force_layout_opt=False" in pt:
            s["train_speedup_vs_diffusers_same_recipe_one_process"] = (
                pt["layout_opt"]["img_per_s"] / pt["peer:force_layout_opt=False"]["img_per_s"])
        cs = probe.get("copy_sources", {}).get("neither")
        if cs:
            s["copy_ms_per_step_before"] = cs["copy_ms_per_step"]
            s["copy_ms_per_step_before_from_convolution_backward"] = sum(
                r["ms_per_step"] for r in cs["sources"] if "convolution_backward" in r["chain"])
    s["train_same_mode_speedups"] = {k.split(":", 1)[1]: rows[k]["img_per_s"] / rows["peer:" + k.split(":", 1)[1]]["img_per_s"]
                                     for k in rows if k.startswith("ours:") and "peer:" + k.split(":", 1)[1] in rows}
    if train and "syncs" in train:
        s["train_step_syncs_before_the_fix"] = train["syncs"]["syncs_per_step"]
    syncs = next((d["syncs"] for d in (fast, gn, prev) if d and "syncs" in d), None)
    if syncs:
        s["train_step_syncs"] = syncs["syncs_per_step"]
    prof = next((d["profile"][FASTEST] for d in (prof_rec, fast) if d and FASTEST in d.get("profile", {})), None)
    if prof:
        s["train_ours_profile_buckets_share"] = prof["buckets_share"]
        s["train_ours_profile_buckets_ms_per_step"] = prof["buckets_ms_per_step"]
        s["train_ours_profile_gpu_busy_share"] = prof["gpu_busy_share"]
    lc = next((d["loss_curve"] for d in (train4_ours, train_final, fast, gn, prev) if d and "loss_curve" in d), None)
    if lc:
        s["loss_curve_batch"] = lc["batch"]
        s["loss_curve_max_rel_diff_window_means"] = lc["max_rel_diff_window_means"]
        s["loss_curve_final_window_rel_diff"] = lc["final_window_rel_diff"]
    if sample4 and sample and "bf16+compile+cudagraphs" in sample.get("peer", {}):
        # the package now samples with its Triton GroupNorm (sample_triton_gn.json); diffusers from sample.json
        o, c = sample4["ours"]["bf16"], sample4["ours"].get("bf16:compiler_groupnorm")
        pg = sample["peer"]["bf16+compile+cudagraphs"]["ddim50"]["median_s"]
        sm = {"ddim50_time_over_peer_graphs": o["ddim50"]["median_s"] / pg,
              "ddim50_speedup_vs_peer_graphs": pg / o["ddim50"]["median_s"],
              "ddpm1000_over_ddim50": o["ddpm1000_over_ddim50"]}
        sample = dict(sample, summary=sm, ours={"bf16": o})
        s["sampling_sources"] = {"ours": "sample_triton_gn.json", "peer": "sample.json"}
        if c:
            s["ddim50_triton_groupnorm_gain"] = c["ddim50"]["median_s"] / o["ddim50"]["median_s"]
            s["ours_ddim50_s_bf16_compiler_groupnorm"] = c["ddim50"]["median_s"]
    if sample and sample.get("summary"):
        sm, o = sample["summary"], sample["ours"]["bf16"]
        s.update(ours_ddim50_s_bf16=o["ddim50"]["median_s"], ours_ddpm1000_s_bf16=o["ddpm1000"]["median_s"],
                 peer_ddim50_s_bf16_graphs=sample["peer"]["bf16+compile+cudagraphs"]["ddim50"]["median_s"],
                 ddim50_time_over_diffusers_graphs=sm["ddim50_time_over_peer_graphs"],
                 ddim50_speedup_vs_diffusers=sm["ddim50_speedup_vs_peer_graphs"],
                 ddim50_speedup_vs_diffusers_bf16=sm["ddim50_speedup_vs_peer_graphs"],
                 ddpm1000_over_ddim50=sm["ddpm1000_over_ddim50"], ddpm1000_over_ddim50_bf16=sm["ddpm1000_over_ddim50"],
                 ddpm_variance=sample.get("ddpm_variance"))
        targets["ddim50 at most 0.5x diffusers' time (bf16, CUDA graphs)"] = sm["ddim50_time_over_peer_graphs"] <= 0.5
        if "train_forward_matrix_kernels_ms_per_step" in s:  # 50 forward passes at the sampling batch, that rate
            s["ddim50_forward_matrix_kernels_s"] = (50 * s["train_forward_matrix_kernels_ms_per_step"] / 1e3
                                                    * sample["config"]["batch"] / s["train_forward_matrix_kernels_batch"])
            s["ddim50_half_of_diffusers_s"] = 0.5 * s["peer_ddim50_s_bf16_graphs"]
        targets["ddpm1000/ddim50 >= 19.5"] = sm["ddpm1000_over_ddim50"] >= 19.5
    for key, name in (("cuda_tests", "cuda_tests_log.txt"), ("cuda_tests_previous", "cuda_tests_final_log.txt"),
                      ("cuda_tests_final", "cuda_tests_latest_log.txt")):
        if (RESULTS / name).is_file():
            s[key] = test_log((RESULTS / name).read_text())
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
    old = load("h100/summary.json")
    if old:
        keep = ("device", "train_speedup_vs_diffusers", "train_speedup_vs_diffusers_same_recipe", "train_ours_img_per_s",
                "train_peer_img_per_s", "train_peer_same_recipe_img_per_s", "train_ours_mfu_vs_measured_matmul",
                "ours_ddim50_s_bf16", "ddim50_speedup_vs_diffusers_bf16", "ddpm1000_over_ddim50")
        s["history"] = {"h100": {k: old[k] for k in keep if k in old} | {"sources": old.get("sources", {})}}
    write_json(RESULTS / "summary.json", s)
    return s


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=1)
