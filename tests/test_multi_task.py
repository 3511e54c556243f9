"""``vtp-bench eval --task a,b,...``: the tasks' clips are decoded and encoded once (``SharedClips``), and each
task's results are those of the task run alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.runs import save_checkpoint
from vtp_bench.cli import main
from vtp_bench.config import to_dict
from vtp_bench.data.synthetic import generate_synthetic
from vtp_bench.lit import VTPModule
from vtp_bench.methods.frozen import Frozen
from vtp_bench.testing import tiny_config

TASKS = ["retrieval", "zeroshot_cls", "multiple_choice", "grounding"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root / "synth", num_videos=60, seed=2, grounding_videos=10, progress=False)
    assert main(["data", "convert", "mc_from_captions", str(root / "synth" / "test.jsonl"), "--out",
                 str(root / "synth" / "mc_test.jsonl")]) == 0
    ckpt = save_checkpoint(VTPModule(to_dict(tiny_config("frozen", f"data.root={root}"))),
                           tmp_path_factory.mktemp("ckpt") / "frozen.ckpt")
    return root, ckpt


def _encoded(monkeypatch) -> list[int]:
    """Counts the clips the video side encodes."""
    seen: list[int] = []
    original = Frozen.encode_video

    def counting(self, batch):  # type: ignore[no-untyped-def]
        seen.append(int(batch["video"].shape[0]))
        return original(self, batch)

    monkeypatch.setattr(Frozen, "encode_video", counting)
    return seen


def test_several_tasks_give_each_tasks_own_results_and_encode_every_clip_once(setup, tmp_path, monkeypatch, capsys):
    root, ckpt = setup
    alone, encoded_alone = {}, 0
    for task in TASKS:
        seen = _encoded(monkeypatch)
        out = tmp_path / f"{task}.json"
        assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(root), "--task", task,
                     "--out", str(out)]) == 0
        alone[task] = json.loads(out.read_text())
        encoded_alone += sum(seen)
    seen = _encoded(monkeypatch)
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(root), "--task",
                 ",".join(TASKS), "--out", str(tmp_path / "all.json")]) == 0
    shown = capsys.readouterr().out
    test_videos = len({json.loads(line)["video_id"] for line in (root / "synth" / "test.jsonl").open()})
    grounding_clips = alone["grounding"]["num_clips"]
    # retrieval, zero-shot and multiple choice read the same test videos: encoded once, not three times
    assert sum(seen) == test_videos + grounding_clips
    assert encoded_alone == 3 * test_videos + grounding_clips
    for task in TASKS:
        together = json.loads((tmp_path / f"all.{task}.json").read_text())
        assert together["task"] == task and together["split"] == alone[task]["split"]
        assert together["metrics"] == pytest.approx(alone[task]["metrics"], abs=1e-9), task
        assert together["per_query"] == alone[task]["per_query"], task
        assert f"results written to {tmp_path / f'all.{task}.json'}" in shown
    assert "MC acc" in shown and "top-1" in shown and "t2v R@1" in shown  # one table of the four


def test_existing_results_of_any_task_are_refused_before_scoring(setup, tmp_path, capsys):
    root, ckpt = setup
    (tmp_path / "all.zeroshot_cls.json").write_text("{}")
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(root), "--task",
                 "retrieval,zeroshot_cls", "--out", str(tmp_path / "all.json")]) == 2
    assert "all.zeroshot_cls.json exists" in capsys.readouterr().err
    assert not (tmp_path / "all.retrieval.json").exists()
    with pytest.raises(SystemExit):  # argparse's usage error
        main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--task", "retrieval,retrieval"])
    assert "each once" in capsys.readouterr().err
