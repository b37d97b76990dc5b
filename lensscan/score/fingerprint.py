"""What makes two scoring runs the same, recorded in the output so that a rerun may resume it.

A run is keyed on its *fingerprint*: the model checksum, the input listing (every shard's URL,
size and ETag or mtime), the candidate cut (threshold or top N), the preprocessing, test-time
augmentation, the unit sizes, the prior of ``p_lens`` and the output's columns. The input URL
as typed is recorded but not part of it: ``in/`` and ``/abs/in/`` list the same shards. The
record is written before the first part is committed:

    _run.json         the settings and the fingerprint
    _shards.parquet   one row per input shard: shard, size, version (ETag or mtime), the
                      provenance that the gallery checks before reading pixels back

A rerun with the same fingerprint resumes; any other run into the same folder is refused,
naming what differs, unless ``overwrite`` clears the old output first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.io.parquet import write_table_atomic
from lensscan.io.storage import Stamp

RUN = "_run.json"
SHARDS = "_shards.parquet"
#: Everything a scoring run writes into its output folder (the lease excepted): what
#: ``overwrite`` clears, in this order: the manifest first (a clear cut short never leaves a
#: manifest claiming scores that are gone), the run record last. Other files are left alone.
OUTPUTS = ("_manifest.json", "candidates.parquet", "_quarantine.json", "scores", SHARDS, RUN)


@dataclass
class RunRecord:
    """The settings that decide a run's output (see the module docstring)."""

    input: str  # input URL as given
    model_checksum: str  # lensscan.modelcard.LoadedModel.checksum
    threshold: float | None  # the candidate cut (None with top)
    top: int | None  # keep the N best as candidates instead
    preprocessing: dict  # the model card's preprocessing
    rows_per_unit: int  # unit size: decides the part files
    tta: bool = False  # test-time augmentation: changes every score
    precision: str = "auto"  # the actors' arithmetic as asked (auto: fp16 on GPUs, fp32 on CPUs)
    first_unit_rows: int = 0  # the survey's first unit is cut into units this big (0: not cut)
    prior: float | None = None  # prevalence p_lens is calibrated to (None: no calibration)
    columns: list[str] | None = None  # the scores' columns (None: written before they were
    #   recorded, without logit, member_spread and p_lens)
    shards: dict[str, Stamp] = field(default_factory=dict)  # URL -> (size, ETag/mtime)

    def settings(self) -> dict:
        """The fingerprinted fields but the shard listing, JSON-ready."""
        d = asdict(self)
        del d["shards"], d["input"]
        return d

    @property
    def fingerprint(self) -> str:
        listing = sorted([url, s.size, s.version] for url, s in self.shards.items())
        blob = json.dumps([self.settings(), listing], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def write(out: str, rec: RunRecord) -> None:
    """Write ``_shards.parquet``, then ``_run.json`` (last: its presence means both exist)."""
    urls = sorted(rec.shards)
    table = pa.table({"shard": urls, "size": [rec.shards[u].size for u in urls],
                      "version": [rec.shards[u].version for u in urls]})
    write_table_atomic(storage.join(out, SHARDS), table)
    doc = {"input": rec.input, **rec.settings(), "fingerprint": rec.fingerprint,
           "shard_count": len(urls)}
    storage.write_bytes_atomic(storage.join(out, RUN), json.dumps(doc, indent=2).encode())


def read_shards(out: str) -> dict[str, Stamp] | None:
    """The shard listing recorded in ``out`` (None for output written without one)."""
    url = storage.join(out, SHARDS)
    if not storage.exists(url):
        return None
    try:
        t = pq.read_table(pa.BufferReader(storage.read_bytes(url)))
        cols = [t.column(c).to_pylist() for c in ("shard", "size", "version")]
    except (pa.ArrowException, KeyError) as exc:
        raise OutputError(f"{url}: not the output's shard listing ({storage.short(exc)}); the "
                          "output is damaged: score into it again with --overwrite") from None
    return {u: Stamp(s, v) for u, s, v in zip(*cols, strict=True)}


def read_json(url: str) -> dict:
    """A JSON file of the output (``_run.json``, ``_manifest.json``).

    Raises
    ------
    OutputError
        When it is not a JSON object, naming the file.
    """
    try:
        doc = json.loads(storage.read_bytes(url))
    except (ValueError, UnicodeDecodeError) as exc:
        raise OutputError(f"{url}: not a valid JSON file ({exc}); the output is damaged: score "
                          "into it again with --overwrite") from None
    if not isinstance(doc, dict):
        raise OutputError(f"{url}: not a JSON object; the output is damaged: score into it "
                          "again with --overwrite")
    return doc


def read(out: str) -> RunRecord | None:
    """The run recorded in ``out``, or None."""
    url = storage.join(out, RUN)
    if not storage.exists(url):
        return None
    doc = read_json(url)
    fields = {k: f for k, f in RunRecord.__dataclass_fields__.items() if k != "shards"}
    # a setting added after the record was written has its default there
    values = {k: doc.get(k, f.default if f.default is not MISSING else None)
              for k, f in fields.items()}
    return RunRecord(**values, shards=read_shards(out) or {})


def differences(old: RunRecord, new: RunRecord) -> list[str]:
    """What differs between two runs, in words (empty when they are the same run)."""
    diffs = [_setting_change(k, a, b) for k, a, b in
             ((k, old.settings()[k], v) for k, v in new.settings().items())
             if a != b and k != "model_checksum"]
    if old.model_checksum != new.model_checksum:
        diffs.insert(0, "another model (checksum "
                        f"{str(old.model_checksum)[:12]} -> {new.model_checksum[:12]})")
    added = sorted(set(new.shards) - set(old.shards))
    removed = sorted(set(old.shards) - set(new.shards))
    changed = sorted(u for u in set(new.shards) & set(old.shards) if new.shards[u] !=
                     old.shards[u])
    for word, urls in (("added", added), ("removed", removed), ("changed", changed)):
        if urls:
            more = f" and {len(urls) - 3} more" if len(urls) > 3 else ""
            diffs.append(f"{len(urls)} input shard(s) {word} ({', '.join(urls[:3])}{more})")
    return diffs


def _setting_change(key: str, old: object, new: object) -> str:
    """One setting's change in words; column lists by what was added and removed."""
    if key != "columns":
        return f"{key} {old!r} -> {new!r}"
    if old is None:
        return f"columns: none recorded (an older lensscan's output) -> {', '.join(new or [])}"
    old_cols, new_cols = list(old), list(new or [])
    added = [c for c in new_cols if c not in old_cols]
    removed = [c for c in old_cols if c not in new_cols]
    parts = ([f"added {', '.join(added)}"] if added else []) + \
        ([f"removed {', '.join(removed)}"] if removed else [])
    return "columns " + ("; ".join(parts) or "reordered")


def has_output(out: str) -> bool:
    """True when ``out`` holds anything a scoring run writes."""
    return any(storage.exists(storage.join(out, name)) for name in OUTPUTS)


def clear(out: str) -> None:
    """Remove what a scoring run wrote into ``out`` (other files stay)."""
    for name in OUTPUTS:
        storage.remove(storage.join(out, name))


def claim(out: str, rec: RunRecord, overwrite: bool = False) -> bool:
    """Make ``out`` the output of run ``rec``: resume it when it holds the same run, clear it
    first when ``overwrite`` (the same run too: scored anew, as asked, which also repairs an
    output damaged by hand); returns True when earlier output was cleared.

    Raises
    ------
    OutputError
        When ``out`` holds another run (or output without a record) and not ``overwrite``.
    """
    try:
        old = read(out)
    except OutputError:  # a damaged record: cleared with the rest when overwrite
        if not overwrite:
            raise
        old = None
    if old is not None and old.fingerprint == rec.fingerprint and not overwrite:
        return False
    cleared = False
    if has_output(out):
        if not overwrite:
            why = ("; ".join(differences(old, rec)) if old is not None else
                   f"it has no run record ({RUN}): written by an older lensscan or another tool")
            raise OutputError(f"{out} holds the output of another run ({why}); rerun with "
                              "--overwrite to clear it and score anew, or pick another output")
        clear(out)
        cleared = True
    write(out, rec)
    return cleared
