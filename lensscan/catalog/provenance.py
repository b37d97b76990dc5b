"""Where a catalogue came from: the scoring run behind an output folder, as written into FITS
headers and VOTable INFO elements (:mod:`lensscan.catalog.formats`).

The record comes from the output's ``_manifest.json`` (a completed run: lensscan version, model
name, URL and checksum, the run's fingerprint, start and end) or, for an output still being
written or interrupted, from its ``_run.json`` (fingerprint and model checksum only).
"""

from __future__ import annotations

from dataclasses import dataclass

from lensscan import __version__
from lensscan.errors import OutputError
from lensscan.io import storage
from lensscan.score import commit, fingerprint


@dataclass(frozen=True)
class Provenance:
    """The scoring run behind a catalogue (``None`` where the output does not say)."""

    output: str  # the scoring output's URL
    complete: bool  # the run finished (the output has its manifest)
    lensscan_version: str | None = None  # the version that scored
    model_name: str | None = None
    model_url: str | None = None  # as given to lensscan score ("default" for the bundled one)
    model_checksum: str | None = None  # sha256 over the model's cards and weights
    run_fingerprint: str | None = None  # sha256 of the run's settings and input listing
    run_started: str | None = None  # ISO 8601 UTC
    run_finished: str | None = None  # ISO 8601 UTC
    input: str | None = None  # the input URL as given
    threshold: float | None = None  # the candidate cut (None when the run kept a top N)
    top: int | None = None

    def items(self) -> list[tuple[str, str, object]]:
        """``(FITS keyword, VOTable INFO name, value)`` of every known field, with the version
        of lensscan that wrote the catalogue first."""
        rows = [("CREATOR", "written_by", f"lensscan {__version__}"),
                ("LSVERS", "lensscan_version", self.lensscan_version),
                ("MODEL", "model_name", self.model_name),
                ("MODELURL", "model_url", self.model_url),
                ("MODELSUM", "model_checksum", self.model_checksum),
                ("RUNID", "run_fingerprint", self.run_fingerprint),
                ("RUNSTART", "run_started", self.run_started),
                ("RUNEND", "run_finished", self.run_finished),
                ("INPUT", "input", self.input),
                ("THRESH", "threshold", self.threshold),
                ("TOPN", "top", self.top),
                ("COMPLETE", "complete", self.complete),
                ("SCOREOUT", "scoring_output", self.output)]
        return [r for r in rows if r[2] is not None]


def provenance(out: str) -> Provenance:
    """The provenance of scoring output ``out`` (see the module docstring)."""
    url = storage.join(out, commit.MANIFEST)
    out = storage.absolute(out)
    if storage.exists(url):
        m = fingerprint.read_json(url)
        model = m.get("model") or {}
        if not isinstance(model, dict):
            raise OutputError(f"{url}: field 'model' is not an object; the output is damaged: "
                              "score into it again with --overwrite")
        return Provenance(out, True, m.get("lensscan_version"), model.get("name"),
                          model.get("url"), model.get("checksum"), m.get("fingerprint"),
                          m.get("started"), m.get("finished"), m.get("input"),
                          m.get("threshold"), m.get("top"))
    rec = fingerprint.read(out)
    if rec is None:
        return Provenance(out, False)
    return Provenance(out, False, model_checksum=rec.model_checksum,
                      run_fingerprint=rec.fingerprint, input=rec.input,
                      threshold=rec.threshold, top=rec.top)
