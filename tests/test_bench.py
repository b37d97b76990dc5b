"""`lensscan bench` runs and reports every figure it promises (no speed is asserted here)."""

from __future__ import annotations

import json

import pytest

from lensscan.cli import main

KEYS = {"model_only", "plain_loop", "pipeline_local", "pipeline_s3", "peak_pss_mb", "peak_rss_mb",
        "flops_per_cutout", "model_gflops", "matmul_gflops", "scaling"}


@pytest.mark.slow
def test_bench_json_keys(ray_local, tiny_model, capsys):
    assert main(["bench", "--n", "300", "--plain-n", "30", "--model", tiny_model, "--scaling",
                 "--json", "--batch-size", "128"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) >= KEYS
    assert all(res[k] > 0 for k in KEYS - {"scaling"})
    assert [row["n"] for row in res["scaling"]] == [300, 3000]
    assert all(row["peak_pss_mb"] > 0 and row["cutouts_s"] > 0 for row in res["scaling"])
    assert res["pipeline_local_over_model_only"] == pytest.approx(
        res["pipeline_local"] / res["model_only"])


def test_read_speed_reports_both_numbers(capsys):
    assert main(["bench", "--read-only", "--n", "500"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["read_n"] == 500 and res["raw_read_mb_s"] > 0 and res["parquet_read_mb_s"] > 0
