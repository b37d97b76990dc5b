"""The scoring actor's work: raw cutouts in, scores out, on the device Ray gave it.

The read tasks only decode; here a batch is preprocessed (sky and noise from the border, crop,
stretch: :func:`lensscan.data.preprocess.preprocess_tensor`) and scored on the actor's device,
batched. On a GPU the batch is copied into pinned host memory in chunks and sent with
non-blocking copies on a copy stream while the previous chunk computes (fp16 autocast and
channels-last by default, ``torch.compile`` on request); Ray Data runs several calls per GPU actor
at once (one stream pair and one set of pinned buffers per calling thread), so host work, copies
and kernels of different batches overlap. On CPU the same functions run in place, in float32,
and the scores equal those of the numpy preprocessing that served before (tested).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import torch

from lensscan.data.preprocess import Preprocessing, as_tensor, finite_rows, preprocess_tensor
from lensscan.io.batch import CUTOUT_SHAPE, flag_non_finite, ok_mask
from lensscan.modelcard import load_model
from lensscan.models import calibration

#: Columns carried from the read stage to the output, unchanged.
PASS = ("object_id", "ra", "dec", "row", "status", "unit")
#: Rows per chunk on a GPU: the unit of copy/compute overlap (and the compiled batch shape).
GPU_CHUNK = 2048
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def ray_gpu_ids() -> list[str] | None:
    """The GPUs Ray assigned to this actor or task ([] for none), or None outside one (a
    driver, or no Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        ctx = ray.get_runtime_context()
        if ctx.get_actor_id() is None and ctx.get_task_id() is None:
            return None
        return [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
    except Exception:  # noqa: BLE001  (not in a worker, or no runtime context)
        return None


def actor_device(gpu_ids: list[str] | None, cuda: bool) -> torch.device:
    """The device to score on: the GPU Ray gave this worker (Ray makes it the only visible one,
    ``cuda:0``), when torch can use CUDA; inside Ray, never a GPU Ray did not give; outside Ray
    (bench, tests), CUDA when there is one."""
    if gpu_ids is None:
        return torch.device("cuda:0" if cuda else "cpu")
    return torch.device("cuda:0" if gpu_ids and cuda else "cpu")


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` is fp16 on a GPU (about 2x fp32) and fp32 on CPU (the scores of
    record); None means full precision."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, not {precision!r}")
    return PRECISIONS[precision]


def arithmetic(precision: str, device: torch.device) -> str:
    """What ``precision`` computes in on ``device``: ``fp32``, ``fp16`` or ``bf16`` (the
    scores of one output are all computed in one; see :mod:`lensscan.score.arithmetic`)."""
    amp = amp_dtype(precision, device)
    return next(name for name, dtype in PRECISIONS.items() if dtype == amp)


class EnsemblePredictor:
    """Ray Data callable class: ``dict[str, ndarray] -> dict[str, ndarray]``.

    Parameters
    ----------
    model_url : str
        Model folder.
    preprocessing : dict, optional
        The model card's preprocessing: the batches hold raw cutouts (N, 3, 64, 64), float32 or
        float16, preprocessed here. None: they hold model input already.
    threads : int, optional
        torch intra-op threads (CPU actors).
    tta : bool
        Mean member logit over the 8 dihedral views.
    precision : {"auto", "fp32", "fp16", "bf16"}
        Autocast dtype (see :func:`amp_dtype`).
    compile : bool
        ``torch.compile`` the ensemble (GPU only; the compiled kernels are cached on disk by
        torch, so a node compiles once).
    device : str, optional
        Force a device; default :func:`actor_device`.
    prior : float, optional
        Prevalence of lenses that ``p_lens`` is calibrated to (the card's calibration moved to
        it, :mod:`lensscan.models.calibration`); None, or a card without calibration:
        ``p_lens`` is NaN.

    Besides ``score`` and ``score_<member>`` every row gets the ensemble ``logit``, the
    ``member_spread`` (standard deviation of the member probabilities) and ``p_lens``.
    Rows whose status is not ``ok`` are not scored (NaN, null in the output); a row whose model
    input is not finite is quarantined as ``non_finite_input``. Each output row says which
    device scored it (``device``) and in which arithmetic (``arithmetic``: fp32, fp16 or bf16),
    so the run can report it and keep one arithmetic per output.
    """

    def __init__(self, model_url: str, preprocessing: dict | None = None,
                 threads: int | None = None, tta: bool = False, precision: str = "auto",
                 compile: bool = False, device: str | None = None,
                 prior: float | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        gpu_ids = None if device else ray_gpu_ids()  # a device given: not a Ray actor's
        self.device = torch.device(device) if device else actor_device(
            gpu_ids, torch.cuda.is_available())
        self.cuda = self.device.type == "cuda"
        self.amp = amp_dtype(precision, self.device)
        self.arithmetic = arithmetic(precision, self.device)
        self.pre = Preprocessing.from_dict(preprocessing) if preprocessing is not None else None
        loaded = load_model(model_url)
        loaded.module.tta = tta  # mean member logit over the 8 dihedral views
        loaded.module.output_logits = True  # probabilities follow on the host, in float32
        self.calibration = calibration.from_card(loaded.card)
        self.prior = prior if self.calibration is not None else None
        self.names = loaded.member_names
        self.model = loaded.module.to(self.device).eval().to(memory_format=torch.channels_last)
        self.compiled = bool(compile and self.cuda)
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed chunk shapes: pick the fastest kernels
        if self.compiled:
            self.model = torch.compile(self.model, dynamic=False)
        self.label = f"{self.device}" + (f" (Ray GPU {','.join(gpu_ids)})" if gpu_ids else "")
        self._local = threading.local()
        if self.cuda:  # kernel selection and compilation now, while the reads start
            side = (CUTOUT_SHAPE[-1] if self.pre else  # raw cutouts, or the card's crop
                    Preprocessing.from_dict(loaded.preprocessing).crop)
            self.scores(np.zeros((GPU_CHUNK, 3, side, side), np.float32))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        status = np.asarray(batch["status"], dtype=object)
        ok = ok_mask(status)
        n = len(ok)
        logit = np.full(n, np.nan, np.float32)
        member_logits = np.full((n, len(self.names)), np.nan, np.float32)
        if ok.any():
            images = batch["image"] if ok.all() else batch["image"][ok]
            z, m, finite = self.scores(images)
            rows = np.flatnonzero(ok)
            if not finite.all():
                status = status.copy()
                flag_non_finite(_scatter(finite, rows, n, True), status)
            logit[rows[finite]], member_logits[rows[finite]] = z[finite], m[finite]
        members = calibration.sigmoid(member_logits)  # (N, M)
        out = {k: batch[k] for k in PASS if k in batch}
        out["status"] = status
        out["score"] = calibration.sigmoid(logit)
        for j, name in enumerate(self.names):
            out[f"score_{name}"] = members[:, j]
        out["logit"] = logit
        out["member_spread"] = members.std(axis=1)
        out["p_lens"] = (self.calibration.p_lens(logit, self.prior) if self.prior is not None
                         else np.full(n, np.nan, np.float32))
        out["device"] = np.full(n, self.label, dtype=object)
        out["arithmetic"] = np.full(n, self.arithmetic, dtype=object)
        return out

    def scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ensemble and member logits, float32 (M,) and (M, K), and which rows' model input was
        finite (M,), of a batch of cutouts (raw, or model input without ``preprocessing``)."""
        if images.dtype not in (np.float32, np.float16):  # native float32/16 travel as they are
            images = images.astype(np.float32)
        with torch.inference_mode():
            if self.cuda:
                return self._scores_cuda(images)
            s, m, f = self._forward(as_tensor(images))  # read-only batches: viewed, not copied
            return s.numpy(), m.numpy(), f.numpy()

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Preprocess and score cutouts on the device: float32 logits and finite rows."""
        y = preprocess_tensor(x, self.pre) if self.pre else x.float()
        finite = finite_rows(y)
        y = torch.where(finite[:, None, None, None], y, 0.0)
        y = y.contiguous(memory_format=torch.channels_last)
        amp = contextlib.nullcontext() if self.amp is None else torch.autocast(
            self.device.type, dtype=self.amp)
        with amp:
            s, m = self.model(y)  # (N,), (N, M)
        return s.float(), m.float(), finite

    def _scores_cuda(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chunks through pinned buffers and a copy stream, overlapped with compute."""
        st = _streams(self._local, self.device)
        n, outs = len(images), []
        with torch.cuda.stream(st.compute):
            for i, lo in enumerate(range(0, n, GPU_CHUNK)):
                k = min(GPU_CHUNK, n - lo)
                pin, done = st.slot(i % 2, images.dtype, images.shape[1:])
                done.synchronize()  # the copy out of this buffer two chunks ago has finished
                np.copyto(pin.numpy()[:k], images[lo:lo + k])
                rows = GPU_CHUNK if self.compiled else k  # one static shape when compiled
                with torch.cuda.stream(st.copy):
                    x = pin[:rows].to(self.device, non_blocking=True)
                    done.record(st.copy)
                st.compute.wait_stream(st.copy)
                x.record_stream(st.compute)
                s, m, f = self._forward(x)
                outs.append((s[:k], m[:k], f[:k]))
            s, m, f = (torch.cat(t) for t in zip(*outs, strict=True))
            res = [t.to("cpu", non_blocking=True) for t in (s, m, f)]
        st.compute.synchronize()
        return res[0].numpy(), res[1].numpy(), res[2].numpy()


class _Streams:
    """One calling thread's CUDA streams and double-buffered pinned host memory."""

    def __init__(self, device: torch.device) -> None:
        self.compute = torch.cuda.Stream(device)
        self.copy = torch.cuda.Stream(device)
        self.pinned: dict[tuple, tuple[torch.Tensor, torch.cuda.Event]] = {}

    def slot(self, i: int, dtype: np.dtype, shape: tuple) -> tuple[torch.Tensor, object]:
        key = (i, np.dtype(dtype).str, tuple(shape))
        if key not in self.pinned:
            t = torch.zeros((GPU_CHUNK, *shape), dtype=torch.from_numpy(
                np.zeros(0, dtype)).dtype).pin_memory()
            ev = torch.cuda.Event()
            ev.record(self.copy)
            self.pinned[key] = (t, ev)
        return self.pinned[key]


def _streams(local: threading.local, device: torch.device) -> _Streams:
    if not hasattr(local, "streams"):
        local.streams = _Streams(device)
    return local.streams


def _scatter(values: np.ndarray, rows: np.ndarray, n: int, fill) -> np.ndarray:
    out = np.full(n, fill, dtype=values.dtype)
    out[rows] = values
    return out
