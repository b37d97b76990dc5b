"""`lensscan bench` runs and reports every figure it promises (no speed is asserted here)."""

from __future__ import annotations

import json

import pytest

from lensscan.cli import main

KEYS = {"model_only", "plain_loop", "pipeline_local", "pipeline_s3", "peak_pss_mb", "peak_rss_mb",
        "flops_per_cutout", "model_gflops", "matmul_gflops", "scaling", "cold_start",
        "pipeline_local_startup_s", "pipeline_local_over_model_only"}


@pytest.mark.slow
def test_bench_json_keys(ray_local, tiny_model, capsys):
    assert main(["bench", "--n", "200", "--plain-n", "30", "--model", tiny_model, "--scaling",
                 "--json", "--batch-size", "128", "--pairs", "1"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) >= KEYS
    assert all(res[k] > 0 for k in KEYS - {"scaling", "cold_start"})
    assert [row["n"] for row in res["scaling"]] == [200, 2000]
    assert all(row["peak_pss_mb"] > 0 and row["cutouts_s"] > 0 for row in res["scaling"])
    # model-only and the pipelines in alternation: a c a d a e a f a (one pair of each: the
    # median and range of several pairs are checked below, on figures given)
    assert res["pairs"] == 1 and len(res["model_only_runs"]) == 5
    assert res["auto_engine"] == "local"  # 200 rows: a user's run stays in the process
    a = res["model_only_runs"]
    for k, kind in enumerate(("local", "s3", "inprocess", "inprocess_s3")):
        runs = res[f"pipeline_{kind}_runs"]
        assert len(runs) == 1 and runs[0]["startup_s"] > 0
        # each run's baseline is the mean of the model-only runs either side of it
        assert runs[0]["model_only"] == pytest.approx((a[k] + a[k + 1]) / 2)
        ratios = sorted(r["rate"] / r["model_only"] for r in runs)
        lo, hi = res[f"pipeline_{kind}_over_model_only_range"]
        assert (lo, hi) == pytest.approx((ratios[0], ratios[-1]))
        assert lo <= res[f"pipeline_{kind}_over_model_only"] <= hi
        assert res[f"pipeline_{kind}_startup_s"] > 0
        assert all(r["peak_pss_mb"] > 0 for r in runs)  # each run's own peak
    cold = res["cold_start"]  # a user's first small run: the local engine, no Ray started
    assert cold["engine"] == "local" and 0 < cold["first_commit_s"] < cold["wall_s"]
    cold = res["cold_start_ray"]  # a fresh process with its own Ray: start-up counted
    assert cold["engine"] == "ray" and 0 < cold["first_commit_s"] < cold["wall_s"]
    assert cold["startup"]["ray_s"] > 0
    for kind in ("inprocess", "inprocess_s3"):
        assert {r["devices"]["cpu"] for r in res[f"pipeline_{kind}_runs"]} == {200}
    assert res["device"] == "cpu" and "gpu" not in res


def test_pairs_report_the_median_ratio_to_the_neighbouring_model_only_runs_and_its_range():
    """Three pairs: a c a c a c a. Each ratio is to the mean of the model-only runs either side
    (a slow baseline moves both sides), the median is reported with its range."""
    from lensscan.bench.run import summarise

    a = [400.0, 500.0, 300.0, 400.0]
    rates, steady = [225.0, 360.0, 140.0], [270.0, None, 210.0]
    rows = [{"rate": r, "steady": st, "startup_s": 2.0 + k, "model_only": (a[k] + a[k + 1]) / 2}
            for k, (r, st) in enumerate(zip(rates, steady, strict=True))]
    res = summarise({"local": rows, "s3": []}, a)
    assert res["pipeline_local_over_model_only"] == pytest.approx(0.5)  # 0.5, 0.9, 0.4
    assert res["pipeline_local_over_model_only_range"] == pytest.approx([0.4, 0.9])
    assert res["pipeline_local"] == 225.0 and res["pipeline_local_startup_s"] == 3.0
    # runs without a steady phase are left out of the steady figures, not counted as zero
    assert res["pipeline_local_steady"] == 240.0
    assert res["pipeline_local_steady_over_model_only_range"] == pytest.approx([0.6, 0.6])
    assert res["model_only"] == 400.0 and "pipeline_s3" not in res


def test_read_speed_reports_both_numbers(capsys):
    assert main(["bench", "--read-only", "--n", "500"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["read_n"] == 500 and res["raw_read_mb_s"] > 0 and res["parquet_read_mb_s"] > 0


def test_server_cpu_is_measured():
    """The S3 runs report the test server's CPU seconds (it shares the cores that score)."""
    import subprocess
    import sys
    import time

    from lensscan.bench.data import server_cpu_s

    busy = "import time\nt = time.time()\nwhile time.time() - t < 4: pass\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", busy])
    try:
        time.sleep(0.5)
        first = server_cpu_s(proc)
        time.sleep(1.0)
        assert server_cpu_s(proc) > first >= 0
    finally:
        proc.kill()
        proc.wait()
    assert server_cpu_s(None) is None


def test_report_names_the_s3_servers_cpu_and_peaks():
    from lensscan.bench.report import report

    res = {"n": 100, "batch_size": 64, "threads": 2, "model_only": 500.0, "peak_pss_mb": 1.0,
           "peak_rss_mb": 1.0, "flops_per_cutout": 1e8, "model_gflops": 50.0,
           "matmul_gflops": 200.0, "pipeline_s3": 300.0,
           "pipeline_s3_runs": [{"server_cpu_s": 6.5, "peak_pss_mb": 900},
                                {"server_cpu_s": 7.25, "peak_pss_mb": 1000}, {}]}
    text = report(res)
    assert "the S3 test server used 6.5-7.2 CPU seconds per run" in text
    assert "pipeline_s3: peak memory 1000 MB PSS" in text
