"""Grades become training data: graders' CSVs combined, agreement, relabelling, --init default."""

from __future__ import annotations

import numpy as np
import pytest
from support import make_batch

from lensscan.cli import main
from lensscan.data.grades import (
    agreement,
    combine,
    describe,
    graded,
    graded_labels,
    latest,
    read_grades,
)
from lensscan.data.preprocess import Preprocessing
from lensscan.errors import ModelError
from lensscan.io.parquet import write_parquet
from lensscan.modelcard import default_model_url
from lensscan.train.labels import Relabel
from lensscan.train.warmstart import resolve_init


def _csv(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_read_grades_names_the_grader_and_refuses_unknown_grades(tmp_path):
    g = read_grades(_csv(tmp_path / "alice.csv", "object_id,grade\n7,A\nx8,not a lens\n9,c\n"))
    assert g["object_id"].tolist() == ["7", "x8", "9"] and g["value"].tolist() == [3, 0, 1]
    assert set(g["grader"]) == {str(tmp_path / "alice.csv")} and np.isnan(g["score"]).all()
    with pytest.raises(ValueError, match="row 3: grade 'maybe'"):
        read_grades(_csv(tmp_path / "b.csv", "object_id,grade\n1,B\n2,maybe\n"))


def test_combined_labels_on_the_3_2_1_0_scale(tmp_path):
    a = _csv(tmp_path / "a.csv", "object_id,grade\n1,A\n2,B\n3,C\n4,not a lens\n5,A\n6,C\n")
    b = _csv(tmp_path / "b.csv", "object_id,grade\n1,B\n2,not a lens\n3,C\n4,not a lens\n"
                                 "5,C\n6,not a lens\n")
    rows = latest([read_grades(a), read_grades(b)])
    c = combine(rows)
    means = dict(zip(c.object_id.tolist(), c.mean.tolist(), strict=True))
    assert means == {"1": 2.5, "2": 1.0, "3": 1.0, "4": 0.0, "5": 2.0, "6": 0.5}
    assert c.labels() == {"1": 1, "4": 0, "5": 1}  # 2, 3 and 6 are C-like: left out
    assert combine(rows, "lens").labels()["2"] == 1
    assert combine(rows, "nonlens").labels()["6"] == 0
    labels, report = graded_labels([a, b])
    assert labels == c.labels() and report["graders"] == 2 and report["left_out"] == 3


def test_agreement_and_fleiss_kappa():
    # 4 objects x 2 graders; they agree on 1 and 2 only
    rows = {"object_id": np.array(["1", "1", "2", "2", "3", "3", "4", "4"], dtype=object),
            "value": np.array([3, 3, 0, 0, 3, 0, 2, 1]),
            "grader": np.array(["a", "b"] * 4, dtype=object)}
    r = agreement(rows)
    assert r["graded_by_several"] == 4 and r["agreement"] == 0.5
    # Fleiss: P_i = 1, 1, 0, 0 -> 0.5; p_j = (3, 1, 1, 3) / 8 -> P_e = 20 / 64
    assert r["fleiss_kappa"] == pytest.approx((0.5 - 20 / 64) / (1 - 20 / 64))
    single = agreement({k: v[::2] for k, v in rows.items()})
    assert single["agreement"] is None and "no object graded twice" in describe(
        {**single, "lens": 1, "nonlens": 1, "left_out": 0, "grade_c": "drop"})


def test_the_latest_grade_of_a_grader_counts(tmp_path):
    g = read_grades(_csv(tmp_path / "g.csv", "object_id,grade,grader,time,score\n"
                                             "1,A,ann,2026-05-02T10:00,0.9\n"
                                             "1,not a lens,ann,2026-05-01T09:00,0.9\n"
                                             "1,B,bob,,0.9\n"))
    rows = latest([g])
    assert sorted(zip(rows["grader"], rows["value"], strict=True)) == [("ann", 3), ("bob", 2)]


def test_named_graders_are_never_merged_and_the_order_of_files_does_not_matter(tmp_path):
    """Two named graders giving the same grade at the same time were taken for one grading
    event exported twice: one was dropped, or (in the other order of files) a grader's stale
    grade counted instead of its latest; the label hung on the order of the CSVs."""
    x = _csv(tmp_path / "x.csv", "object_id,grade,grader,time\n1,not a lens,X,2026-01-01\n"
                                 "1,A,X,2026-01-02\n")
    y = _csv(tmp_path / "y.csv", "object_id,grade,grader,time\n1,A,Y,2026-01-02\n")
    z = _csv(tmp_path / "z.csv", "object_id,grade,grader,time\n1,not a lens,Z,2026-01-03\n")
    for order in ([x, y, z], [y, x, z], [z, y, x]):
        combined, report = graded(order)
        assert combined.mean.tolist() == [2.0] and combined.labels() == {"1": 1}
        assert report["graders"] == 3
    # one unnamed grader's export given as two files is still one grading event
    a = _csv(tmp_path / "a.csv", "object_id,grade,time\n1,B,2026-01-05\n")
    b = _csv(tmp_path / "b.csv", "object_id,grade,time\n1,B,2026-01-05\n")
    combined, _ = graded([x, a, b])
    assert combined.graders.tolist() == [2] and combined.mean.tolist() == [2.5]


def test_relabel_keeps_graded_rows_with_their_grades():
    batch = {"object_id": np.array([1, 2, 3, 4]), "label": np.array([0, 0, 1, -1], np.int8),
             "image": np.zeros((4, 3, 2, 2))}
    out = Relabel({"2": 1, "3": 0, "9": 1})(batch)
    assert out["object_id"].tolist() == [2, 3] and out["label"].tolist() == [1, 0]
    assert out["image"].shape == (2, 3, 2, 2)


def test_relabel_can_keep_the_rows_own_labels():
    """--keep-labels: ungraded rows keep a 0/1 label of their own (inject's lenses and
    negatives), a grade overrides a row's label, rows with neither stay unlabelled (-1), for
    the training stream to count as it leaves them out."""
    batch = {"object_id": np.array(["inj1-7", "7", "8", "9", "10"], dtype=object),
             "label": np.array([1, 0, 0, -1, 1], np.int8), "image": np.zeros((5, 3, 2, 2))}
    out = Relabel({"8": 1, "10": 0}, keep_labels=True)(batch)
    assert out["object_id"].tolist() == ["inj1-7", "7", "8", "9", "10"]
    assert out["label"].tolist() == [1, 0, 1, -1, 0]
    no_label = {k: v for k, v in batch.items() if k != "label"}
    assert Relabel({"8": 1}, keep_labels=True)(no_label)["object_id"].tolist() == ["8"]


def test_init_default_is_the_bundled_member_of_the_same_architecture():
    root = default_model_url()
    assert resolve_init("default", "resnet", {}, "resnet_s0").endswith("resnet_s0")
    assert resolve_init("default", "resnet", {}, "resnet_s2").endswith("resnet_s2")
    assert resolve_init("default", "multiscale_resnet", {}, "x").endswith("msresnet_s1")
    assert resolve_init(f"{root}/resnet_s2", "resnet", {}, "x").endswith("resnet_s2")
    with pytest.raises(ModelError, match="no member"):
        resolve_init("default", "baseline_cnn", {}, "baseline_cnn_s0")


@pytest.mark.slow
def test_training_stream_has_only_graded_rows(tmp_path, ray_local):
    from lensscan.train.trainer import dataset

    batch = make_batch(40, seed=3)
    batch["label"][:] = 0  # the shards' own labels are overridden
    write_parquet(str(tmp_path / "d" / "a.parquet"), batch)
    grades = {str(i): int(i % 3 == 0) for i in range(0, 40, 2)}
    rows = dataset(str(tmp_path / "d"), Preprocessing(), "normalized", labels=grades).take_all()
    got = {str(r["object_id"]): int(r["label"]) for r in rows}
    assert got == grades


def _graded_survey(tmp_path) -> tuple[str, list[str]]:
    """192 cutouts whose shards say nothing of lenses, and two graders' CSVs for most of them."""
    for k in range(2):
        batch = make_batch(96, seed=40 + k, start_id=k * 1000)
        truth = batch.pop("label")
        write_parquet(str(tmp_path / "survey" / f"p{k}.parquet"), batch)
        with open(tmp_path / f"g{k}.csv", "w") as fh:
            fh.write("object_id,grade,grader\n")
            for i, lens in zip(batch["object_id"], truth, strict=True):
                fh.write(f"{i},{'A' if lens else 'not a lens'},ann\n{i},"
                         f"{'B' if lens else 'not a lens'},bob\n")
    return str(tmp_path / "survey"), [str(tmp_path / "g0.csv"), str(tmp_path / "g1.csv")]


@pytest.mark.slow
def test_train_fine_tunes_the_default_member_on_grades(tmp_path, ray_local, capsys):
    import json
    import signal

    data, grades = _graded_survey(tmp_path)
    out = str(tmp_path / "model")
    ctrl_c = signal.getsignal(signal.SIGINT)
    assert main(["train", data, "--out", out, "--labels", grades[0], "--labels", grades[1],
                 "--init", "default", "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "16", "--lr", "3e-4"]) == 0
    # Ray Train's SIGINT handler is gone once its run ended: a later Ctrl-C is Python's
    assert signal.getsignal(signal.SIGINT) is ctrl_c
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("grades:")]
    assert line[0].startswith("grades: 2 graders, 192 objects, agreement 100% on 192 objects")
    card = json.loads((tmp_path / "model" / "card.json").read_text())
    assert card["training"]["config"]["init"].endswith("resnet_s0")
    assert 0 < card["training"]["grades"]["fleiss_kappa"] < 1  # A vs B differ, classes agree


@pytest.mark.slow
def test_ensemble_job_refits_the_default_weights_on_graded_rows(tmp_path):
    import json
    import pathlib
    import subprocess
    import sys

    data, grades = _graded_survey(tmp_path)
    out = tmp_path / "ens"
    job = pathlib.Path(__file__).resolve().parents[2] / "jobs" / "train_ensemble.py"
    run = subprocess.run([sys.executable, str(job), "--train", data, "--out", str(out),
                          "--labels", grades[0], "--labels", grades[1], "--init-from", "default",
                          "--refit-only"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    bundled = json.loads((pathlib.Path(default_model_url()) / "card.json").read_text())
    assert [m["name"] for m in card["members"]] == [m["name"] for m in bundled["members"]]
    assert [m["weight"] for m in card["members"]] != [m["weight"] for m in bundled["members"]]
    assert card["training_data"]["graded_rows_only"] is True
    for m in card["members"]:  # members copied unchanged
        assert (out / m["name"] / "model.safetensors").read_bytes() == (
            pathlib.Path(default_model_url()) / m["name"] / "model.safetensors").read_bytes()


def test_two_unnamed_exports_are_two_graders_and_times_are_instants(tmp_path):
    """The page's name field is optional: bob/grades.csv and carol/grades.csv are two graders
    who disagree, not one whose later grade wins; times order as instants, not as text."""
    for who, grade in (("bob", "A"), ("carol", "not a lens")):
        (tmp_path / who).mkdir()
        _csv(tmp_path / who / "grades.csv", f"object_id,grade,grader,time\n 7 ,{grade},,\n")
    labels, report = graded_labels([str(tmp_path / w / "grades.csv") for w in ("bob", "carol")])
    assert report["graders"] == 2 and report["graded_by_several"] == 1 and labels == {"7": 1}
    g = read_grades(_csv(tmp_path / "t.csv", "object_id,grade,grader,time\n"
                                             "1,A,ann,2026-11-29T10:00:07Z\n"
                                             "1,not a lens,ann,2026-11-29T10:00:07.900Z\n"
                                             "2,not a lens,ann,2026-11-29T02:00:00Z\n"
                                             "2,A,ann,2026-11-29T10:00:00+09:00\n"))
    rows = latest([g])
    assert dict(zip(rows["object_id"], rows["value"], strict=True)) == {"1": 0, "2": 0}
    with pytest.raises(ValueError, match="row 2: time 'yesterday' is not an ISO 8601 time"):
        read_grades(_csv(tmp_path / "bad.csv", "object_id,grade,time\n1,A,yesterday\n"))


def test_graded_ids_missing_from_the_data_are_counted_or_refused(tmp_path):
    from lensscan.config import TrainConfig
    from lensscan.train.labels import train_labels

    data = tmp_path / "data"
    write_parquet(f"{data}/s.parquet", make_batch(6, seed=1))
    ids = [str(i) for i in make_batch(6, seed=1)["object_id"][:2]]
    grades = _csv(tmp_path / "g.csv", f"object_id,grade\n{ids[0]},A\n{ids[1]},n\nnope,A\n")
    labels, report = train_labels(TrainConfig(data=str(data), out="o", labels=[grades]))
    assert len(labels) == 3 and report["in_data"] == 2 and report["not_in_data"] == 1
    none = _csv(tmp_path / "n.csv", "object_id,grade\nnope,A\nnada,n\n")
    with pytest.raises(ValueError, match="none of the 2 graded objects of .* is in the training"):
        train_labels(TrainConfig(data=str(data), out="o", labels=[none]))


def test_one_unnamed_grader_exporting_twice_is_one_grading_event(tmp_path):
    """The page exports every grade of the run: two exports without a name hold the same
    events, which count once (not two graders agreeing with each other)."""
    text = "object_id,grade,grader,time\n7,A,,2026-11-29T10:00:07Z\n"
    a = _csv(tmp_path / "a.csv", text)
    b = _csv(tmp_path / "b.csv", text + "8,n,,2026-11-29T10:01:00Z\n")
    labels, report = graded_labels([a, b])
    assert labels == {"7": 1, "8": 0} and report["graded_by_several"] == 0
    assert report["unnamed"] == [a, b] and "2 file(s) without grader names" in describe(report)


def test_an_unreadable_shard_counts_no_graded_id_and_stops_nothing(tmp_path):
    from lensscan.train.labels import graded_in_data

    write_parquet(f"{tmp_path}/d/s.parquet", make_batch(4, seed=1))
    (tmp_path / "d" / "t.parquet").write_bytes(b"PAR1 not parquet PAR1")
    assert graded_in_data({"0": 1, "1": 0, "x": 1}, f"{tmp_path}/d") == 2


def test_a_grade_replaces_a_files_label_that_is_no_class():
    """The reader quarantines a label of 2 (invalid_label); a grade of that object is its label
    now, so the row trains (it was dropped), while an ungraded row keeps its own status."""
    batch = {"object_id": np.array([0, 1, 2]), "label": np.array([2, 2, 0], np.int8),
             "status": np.array(["invalid_label: 2 is not a class", "invalid_label: 2 is not a "
                                 "class", "ok"], dtype=object)}
    out = Relabel({"0": 1, "2": 1})(batch)
    assert out["object_id"].tolist() == [0, 2] and out["label"].tolist() == [1, 1]
    assert out["status"].tolist() == ["ok", "ok"]
    # 0 and 1: no grade, no class of their own: kept with their status, which training counts
    kept = Relabel({"2": 1}, keep_labels=True)(batch)
    assert kept["object_id"].tolist() == [0, 1, 2] and kept["label"].tolist() == [-1, -1, 1]
    assert kept["status"].tolist() == batch["status"].tolist()
    from lensscan.io.batch import skipped_note

    assert "2 invalid_label" in skipped_note(kept["status"], "lensscan train")


def test_one_grades_file_given_twice_is_refused(tmp_path):
    """The same file under two spellings would count its grader twice, agreeing with itself."""
    a = _csv(tmp_path / "a.csv", "object_id,grade\n7,A\n8,n\n")
    for twice in (a, str(tmp_path / "." / "a.csv"), f"file://{a}"):
        with pytest.raises(ValueError, match=r"the same grades file as .*a\.csv, given twice"):
            graded_labels([a, twice])
    b = _csv(tmp_path / "b.csv", "object_id,grade\n7,A\n")
    assert graded_labels([a, b])[1]["graders"] == 2


def test_a_grade_without_an_object_id_says_so(tmp_path):
    """An empty id was reported as a grade that is not one of A, B, C, not a lens."""
    with pytest.raises(ValueError, match=r"row 3: the object id is empty \(grade 'not a lens'\)"):
        read_grades(_csv(tmp_path / "g.csv", "object_id,grade\n7,A\n,not a lens\n"))
