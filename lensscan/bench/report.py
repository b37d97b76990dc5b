"""The bench's figures as lines a person reads (``--json`` prints them as they are)."""

from __future__ import annotations


def _range(res: dict, key: str) -> str:
    lo, hi = res.get(f"{key}_range") or (None, None)
    return f" (pairs {lo:.2f}-{hi:.2f})" if lo is not None else ""


def report(res: dict) -> str:
    """Human-readable lines with the ratios."""
    lines = [f"cutouts: {res['n']}, batch {res['batch_size']}, {res['threads']} threads, "
             f"device {res.get('device', 'cpu')}, {res.get('pairs', 1)} pairs"]
    if "auto_engine" in res:
        lines.append(f"lensscan score --engine auto runs {res['n']} cutouts on the "
                     f"{res['auto_engine']} engine: "
                     + " and ".join(k for k in (
                         ("pipeline_inprocess", "pipeline_inprocess_s3")
                         if res["auto_engine"] == "local" else ("pipeline_local", "pipeline_s3"))
                         if k in res))
    for key in ("model_only", "plain_loop", "pipeline_local", "pipeline_s3",
                "pipeline_inprocess", "pipeline_inprocess_s3"):
        if key in res:
            extra = ""
            if res.get(f"{key}_steady"):
                extra = (f"  (first unit committed after {res[f'{key}_startup_s']:.1f}s, then "
                         f"{res[f'{key}_steady']:.1f} cutouts/s)")
            lines.append(f"{key:>21}: {res[key]:9.1f} cutouts/s{extra}")
    ratios = [f"pipeline_{kind}{steady}_over_model_only" for steady in ("", "_steady")
              for kind in ("local", "s3", "inprocess", "inprocess_s3")]
    for key in ratios + ["pipeline_local_over_plain_loop", "pipeline_inprocess_over_plain_loop"]:
        if key in res:
            lines.append(f"{key}: {res[key]:.2f}{_range(res, key)}")
    for kind in ("local", "s3", "inprocess", "inprocess_s3"):
        runs = res.get(f"pipeline_{kind}_runs", [])
        peak = [r["peak_pss_mb"] for r in runs if r.get("peak_pss_mb")]
        cpu = [r["server_cpu_s"] for r in runs if r.get("server_cpu_s") is not None]
        if peak:
            lines.append(f"pipeline_{kind}: peak memory {max(peak):.0f} MB PSS")
        if cpu:
            lines.append(f"pipeline_{kind}: the S3 test server used {min(cpu):.1f}-"
                         f"{max(cpu):.1f} CPU seconds per run, on the cores that score")
    for key in ("cold_start", "cold_start_ray"):
        cold = res.get(key)
        if cold:
            lines.append(f"cold start ({cold['n']} cutouts, fresh process, {cold['engine']} "
                         f"engine): first unit committed after {cold['first_commit_s']:.1f}s, "
                         f"{cold['wall_s']:.1f}s in all")
    lines.append(f"peak memory of the process tree: {res['peak_pss_mb']:.0f} MB PSS "
                 f"({res['peak_rss_mb']:.0f} MB summed RSS)")
    lines.append(f"model: {res['flops_per_cutout'] / 1e6:.1f} MFLOP/cutout, "
                 f"{res['model_gflops']:.1f} GFLOP/s achieved vs {res['matmul_gflops']:.1f} "
                 "GFLOP/s float32 matmul")
    lines += _gpu_lines(res)
    for row in res.get("scaling", []):
        lines.append(f"scaling: n={row['n']}: {row['seconds']:.1f}s "
                     f"({row['cutouts_s']:.0f} cutouts/s end to end, "
                     f"{res['model_only'] and row['cutouts_s'] / res['model_only']:.2f} of "
                     f"model-only), peak {row['peak_pss_mb']:.0f} MB PSS")
    if len(res.get("scaling", [])) == 2:
        a, b = res["scaling"]
        lines.append(f"scaling 10N/N: time x{b['seconds'] / a['seconds']:.2f}, "
                     f"peak memory x{b['peak_pss_mb'] / a['peak_pss_mb']:.2f}")
    return "\n".join(lines)


def _gpu_lines(res: dict) -> list[str]:
    g, util = res.get("gpu") or {}, res.get("gpu_while_scoring") or {}
    lines = []
    if "model_eager" in g:
        lines.append(f"GPU {g['device']}: model alone {g['model_eager']:.0f} cutouts/s eager, "
                     f"{g['model_compiled']:.0f} compiled ({g['compile_s']:.0f}s to compile), "
                     f"preprocessing {g['preprocess_on_gpu']:.0f}/s")
    if "actor_path_fp32_in" in g:
        lines.append(f"GPU actor path from raw cutouts: {g['actor_path_fp32_in']:.0f}/s float32, "
                     f"{g['actor_path_fp16_in']:.0f}/s float16")
    if "util_mean_pct" in util:
        lines.append(f"GPU while scoring: {util['util_mean_pct']:.0f}% busy "
                     f"({util['util_steady_mean_pct']:.0f}% after the first commit), peak "
                     f"{util['memory_peak_mb']:.0f} MB in use ({util['source']})")
    if "train_cutouts_s" in g:
        lines.append(f"GPU training: {g['train_cutouts_s']:.0f} cutouts/s (batch "
                     f"{g['train_batch']}) vs {g['plain_loop_cutouts_s']:.0f} for a plain loop "
                     f"({g['train_over_plain_loop']:.2f})")
    lines += [f"GPU {k}: {v}" for k, v in g.items() if k.endswith("_error")]
    return lines
