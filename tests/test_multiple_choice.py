"""Multiple-choice video-to-text (``tasks/multiple_choice.py``) and its converters
(``data/convert/multiple_choice.py``): the official MSR_MC_test.csv layout, items built from the synthetic dataset,
a known-answer oracle, every method end to end, and the compare table's column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import PACKAGE_METHODS, assert_per_query_means
from helpers import oracle
from helpers.oracle import oracle_checkpoint
from helpers.runs import save_checkpoint
from vtp_bench.cli import main
from vtp_bench.config import to_dict
from vtp_bench.data.convert.base import CONVERTERS, ConvertError
from vtp_bench.data.manifest import ManifestError, ManifestRow, read_manifest, resolve_path, write_manifest
from vtp_bench.data.synthetic import generate_synthetic
from vtp_bench.lit import VTPModule
from vtp_bench.report import format_table
from vtp_bench.tasks import multiple_choice
from vtp_bench.tasks.multiple_choice import pick
from vtp_bench.testing import tiny_config

HEADER = "key\tvid_key\tvideo_id\ta1\ta2\ta3\ta4\ta5\tanswer\n"


def _mc_csv(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def test_msrvtt_mc_csv_becomes_five_rows_per_video_with_the_0_based_answer(tmp_path):
    src = _mc_csv(tmp_path / "MSR_MC_test.csv", [
        "mc0\tmsr7010\tvideo7010\ta man cooks\ta dog runs\ta cat sleeps\ta car drives\ta girl sings\t0",
        "mc1\tmsr7011\tvideo7011\tpeople dance\tsomeone swims\ta man talks\ta bird flies\ta boy reads\t3",
    ])
    rows = CONVERTERS.get("msrvtt_mc")([src]).rows
    assert [r.video_id for r in rows] == ["video7010"] * 5 + ["video7011"] * 5
    assert [r.text_id for r in rows[:5]] == [f"mc0/a{k}" for k in range(1, 6)]
    assert [r.text for r in rows if r.label == "answer"] == ["a man cooks", "a bird flies"]
    assert {r.path for r in rows} == {"video7010.mp4", "video7011.mp4"} and {r.split for r in rows} == {"mc_test"}


@pytest.mark.parametrize("line, problem", [
    ("mc0\tmsr1\tvideo1\ta\tb\tc\td\te\t5", "answer 5 is not a candidate's index"),
    ("mc0\tmsr1\tvideo1\ta\tb\tc\td\te\tone", "is not an integer"),
    ("mc0\tmsr1\tvideo1\ta\t\tc\td\te\t1", "empty key, video_id or candidate"),
])
def test_msrvtt_mc_bad_rows_name_the_line(tmp_path, line, problem):
    src = _mc_csv(tmp_path / "MSR_MC_test.csv", ["mc9\tmsr0\tvideo0\tv\tw\tx\ty\tz\t2", line])
    with pytest.raises(ConvertError, match=rf"line 3: .*{problem}"):
        CONVERTERS.get("msrvtt_mc")([src])
    (tmp_path / "comma.csv").write_text(HEADER.replace("\t", ","))
    with pytest.raises(ConvertError, match="lacks column"):
        CONVERTERS.get("msrvtt_mc")([tmp_path / "comma.csv"])


def test_a_question_needs_one_answer_among_two_or_more_candidates(tmp_path):
    from vtp_bench.tasks.multiple_choice import check_questions

    rows = [ManifestRow("v", "v.mp4", t, f"q/{t}", "mc_test", label=None) for t in "abc"]
    with pytest.raises(ManifestError, match="video 'v' has 3 candidate.s. and 0 answer"):
        check_questions(rows, Path("m.jsonl"))


def test_a_tie_at_the_top_is_counted_at_its_expected_value():
    assert pick([0.1, 0.9, 0.3], 1) == 1.0 and pick([0.1, 0.9, 0.3], 0) == 0.0
    assert pick([0.9, 0.9, 0.3, 0.9], 3) == pytest.approx(1 / 3) and pick([0.9, 0.9, 0.3], 2) == 0.0


@pytest.fixture(scope="module")
def synth_mc(tmp_path_factory) -> Path:
    """A synthetic dataset with its multiple-choice items built from the test split (as docs/tasks.md says)."""
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root / "synth", num_videos=80, seed=3, grounding_videos=1, progress=False)
    assert main(["data", "convert", "mc_from_captions", str(root / "synth" / "test.jsonl"), "--out",
                 str(root / "synth" / "mc_test.jsonl")]) == 0
    return root


def test_items_from_captions_are_seeded_distinct_and_answered_by_the_videos_own_caption(synth_mc):
    rows = read_manifest(synth_mc / "synth" / "mc_test.jsonl")
    first = {}
    for r in read_manifest(synth_mc / "synth" / "test.jsonl"):
        first.setdefault(r.video_id, r)
    by_video: dict[str, list[ManifestRow]] = {}
    for r in rows:
        by_video.setdefault(r.video_id, []).append(r)
    assert set(by_video) <= set(first) and len(by_video) >= len(first) - 1
    for vid, cands in by_video.items():
        assert len(cands) == 5 and len({c.text for c in cands}) == 5
        assert [c.text for c in cands if c.label == "answer"] == [first[vid].text]
        assert cands[0].path == first[vid].path and cands[0].boxes == first[vid].boxes  # beside the source
    again = CONVERTERS.get("mc_from_captions")([synth_mc / "synth" / "test.jsonl"]).rows
    assert [(r.text, r.label) for r in again] == [(r.text, r.label) for r in rows]  # seeded: the same items
    positions = {[c.label for c in cands].index("answer") for cands in by_video.values()}
    assert len(positions) > 1  # the answer is not always in the same place


def test_items_written_elsewhere_still_reach_their_videos_and_box_files(synth_mc, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "mc_test.jsonl"
    assert main(["data", "convert", "mc_from_captions", str(synth_mc / "synth" / "test.jsonl"), "--out", str(out)]) == 0
    assert "videos are expected under" not in capsys.readouterr().out  # the converter placed them
    rows = read_manifest(out)
    assert rows and all(resolve_path(r.path, out).is_file() and resolve_path(r.boxes, out).is_file() for r in rows)


@pytest.mark.parametrize("per_call", [1, 3, 256])
def test_the_oracle_picks_the_nearest_code_and_accuracy_is_known(tmp_path, monkeypatch, per_call):
    """Videos of known codes; candidates "clip k": the oracle scores a candidate higher the smaller (g - k) mod D,
    so its pick is known for every question; the labelled answer is planted right, wrong or tied."""
    dim, codes = 16, [1, 5, 9, 12]
    paths = oracle.write_coded_videos(tmp_path / "mc" / "videos", codes)
    questions = {  # video code -> (candidate codes, index of the labelled answer)
        1: ([4, 1, 7], 1),  # the true code: picked, right
        5: ([3, 6, 4], 0),  # nearest below is 4 (distance 1): picks index 2, answer 0 -> wrong
        9: ([2, 8, 8], 1),  # a tie of two "clip 8": the answer is one of them -> 1/2
        12: ([11, 0, 5, 10], 0),  # 11 is nearest (distance 1): right
    }
    rows = []
    for (code, (cands, answer)), path in zip(questions.items(), paths):
        vid = f"v{code}"
        rows += [ManifestRow(vid, f"videos/{path.name}", f"clip {k}", f"{vid}/a{i}", "mc_test",
                             label="answer" if i == answer else None) for i, k in enumerate(cands)]
    write_manifest(tmp_path / "mc" / "mc_test.jsonl", rows)
    want = []
    for code, (cands, answer) in questions.items():
        dist = [(code - k) % dim for k in cands]
        best = [i for i, d in enumerate(dist) if d == min(dist)]
        want.append(100.0 / len(best) if answer in best else 0.0)
    ckpt = oracle_checkpoint(tmp_path / "o.ckpt", dim)
    out = tmp_path / "r.json"
    monkeypatch.setattr(multiple_choice, "VIDEOS_PER_CALL", per_call)  # videos scored per call: any chunking
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", str(tmp_path / "mc"), "--task", "multiple_choice",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert want == [100.0, 0.0, 50.0, 100.0]
    assert result["metrics"]["accuracy"] == pytest.approx(sum(want) / 4)
    assert result["per_query"]["accuracy"] == pytest.approx(want)
    assert result["chance_accuracy"] == pytest.approx(100 * (3 * (1 / 3) + 1 / 4) / 4)
    assert result["task"] == "multiple_choice" and result["num_questions"] == 4 and result["num_candidates"] == 13


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_every_method_scores_the_synthetic_items_and_compare_shows_the_column(name, synth_mc, tmp_path):
    cfg = tiny_config(name, f"data.root={synth_mc}")
    ckpt = save_checkpoint(VTPModule(to_dict(cfg)), tmp_path / f"{name}.ckpt")
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--task", "multiple_choice", "--data-root",
                 str(synth_mc), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "mc_test" and result["chance_accuracy"] == pytest.approx(20.0)
    assert result["num_questions"] == len({r.video_id for r in read_manifest(synth_mc / "synth" / "mc_test.jsonl")})
    assert 0.0 <= result["metrics"]["accuracy"] <= 100.0 and assert_per_query_means(result) == 1
    table = format_table([result])
    head = table.splitlines()[0]
    assert "MC acc" in head and "multiple-choice on synth/mc_test" in table and "chance 20.0" in table


def test_a_validation_set_the_task_cannot_read_leaves_no_run_dir(synth_mc, tmp_path, capsys):
    """eval.val_task=multiple_choice on the synthetic val split (captions, no questions): refused before a run dir."""
    from vtp_bench.testing import tiny_overrides

    runs = tmp_path / "runs"
    assert main(["train", "frozen_synth", *tiny_overrides("frozen"), "eval.val_task=multiple_choice",
                 f"data.root={synth_mc}", f"run.dir={runs}"]) == 2
    assert "a multiple-choice question is a video with two or more rows" in capsys.readouterr().err
    assert not runs.exists()
