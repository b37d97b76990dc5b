"""``lensscan bench``: throughput and memory of scoring, as ratios measured in one run.

(a) ``model_only``: the ensemble's forward pass on in-memory preprocessed tensors (CPU; on a GPU
    node the GPU, fp16 and channels-last, as the actors run it);
(b) ``plain_loop``: the original project's way: load each ``.npy``, preprocess, one model call
    per file;
(c) ``pipeline_local``: the full Ray Data pipeline from Parquet on local disk;
(d) ``pipeline_s3``: the same from an S3 server on 127.0.0.1 (moto, as in the tests); each
    S3 run's ``server_cpu_s`` is the CPU the server took from the same cores;
(e) ``pipeline_inprocess``: (c)'s survey scored in this process, without Ray
    (``--engine local``, :mod:`lensscan.score.inprocess`);
(f) ``pipeline_inprocess_s3``: (d)'s survey scored in this process.

``auto_engine`` says which pair a user's ``lensscan score`` (``--engine auto``, a fresh process)
runs for ``n`` rows: (e) and (f) up to ``config.LOCAL_MAX_ROWS``, (c) and (d) above.
(a) and the pipelines are measured in alternation (``pairs`` rounds of a c a d a e a f, each
pipeline run between two model-only runs) and the ratios are medians with their range.
``cold_start`` is a user's first small run in a fresh process (``--engine auto``: the local
engine), ``cold_start_ray`` the same with ``--engine ray`` (Ray start included).
``--scaling`` also scores 10x more cutouts (Ray engine) to show time growing linearly and memory
staying flat. With CUDA, ``gpu`` holds the model alone eager and compiled, the actor's path
from raw cutouts, GPU utilisation and memory while scoring, and training against a plain torch
loop.
"""

from lensscan.bench.data import synthetic_batch, write_survey
from lensscan.bench.memory import GpuSampler, PeakMemory
from lensscan.bench.read import read_speed
from lensscan.bench.report import report
from lensscan.bench.run import run_bench, warm_up

__all__ = ["GpuSampler", "PeakMemory", "read_speed", "report", "run_bench", "synthetic_batch",
           "warm_up", "write_survey"]
