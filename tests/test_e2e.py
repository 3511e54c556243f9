"""CPU end-to-end: synthetic data -> train a few steps -> checkpoint -> eval -> compare, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import annotations_dir, assert_per_query_means
from helpers.runs import frozen_tiny
from vtp_bench.cli import main
from vtp_bench.data.manifest import read_manifest
from vtp_bench.data.synthetic import generate_synthetic

TINY = frozen_tiny("method.text.freeze=true", "trainer.max_steps=4")  # the text tower frozen, as frozen_synth's


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root / "synth", num_videos=30, seed=3, grounding_videos=1, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One short training run with one corrupt video in the training manifest."""
    runs = tmp_path_factory.mktemp("runs")
    rows = read_manifest(data_root / "synth" / "train.jsonl")
    corrupt = data_root / "synth" / rows[0].path
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    args = ["train", "frozen_synth", *TINY, f"data.root={data_root}", f"run.dir={runs}", "run.version=t",
            "trainer.max_epochs=2", "trainer.max_steps=-1"]
    assert main(args) == 0
    run = runs / "frozen_synth" / "t"
    return run, rows[0].video_id


def test_training_writes_run_dir_and_reports_skips(trained):
    run, bad_id = trained
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "metrics.csv").is_file()
    summary = json.loads((run / "summary.json").read_text())
    # the corrupt video is skipped once per epoch, and never replaced by another sample
    assert summary["skipped_video_ids"] == [bad_id]
    assert summary["skipped_videos"] == 2
    assert bad_id in summary["skipped_errors"]


def test_summary_validates_the_final_weights_when_training_ends_mid_epoch(data_root, tmp_path):
    """3 steps of an epoch of 5 batches: no epoch-end validation ran, so the summary's metrics come from one more
    validation of the final weights (they were ``{}`` before), equal to ``eval`` of ``last.ckpt``; with validation
    off the summary says so instead of writing empty metrics."""
    common = ["train", "frozen_synth", *TINY, f"data.root={data_root}", f"run.dir={tmp_path}", "trainer.max_steps=3"]
    assert main([*common, "run.version=mid"]) == 0
    summary = json.loads((tmp_path / "frozen_synth" / "mid" / "summary.json").read_text())
    assert summary["global_step"] == 3 and summary["val_step"] == 3 and summary["validation"] == "final weights"
    out = tmp_path / "mid.json"
    assert main(["eval", "--ckpt", summary["checkpoint"], "--dataset", "synth", "--split", "val", "--out", str(out),
                 "--data-root", str(data_root)]) == 0
    assert summary["val_metrics"] == json.loads(out.read_text())["metrics"]
    assert main([*common, "run.version=noval", "trainer.limit_val_batches=0"]) == 0
    off = json.loads((tmp_path / "frozen_synth" / "noval" / "summary.json").read_text())
    assert off["val_metrics"] is None and off["validation"] == "off (trainer.limit_val_batches=0)"


def test_eval_reproduces_training_validation_and_itself(trained, data_root, tmp_path):
    run, _ = trained
    summary = json.loads((run / "summary.json").read_text())
    ckpt = run / "checkpoints" / "last.ckpt"
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--split", "val", "--out", str(out),
                     "--data-root", str(data_root)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0]["metrics"] == outs[1]["metrics"]
    assert outs[0]["metrics"] == summary["val_metrics"]
    for key in ("method", "checkpoint", "dataset", "split", "num_queries", "num_videos", "frames", "sampler"):
        assert key in outs[0]
    assert outs[0]["num_videos"] == len({r.video_id for r in read_manifest(data_root / "synth" / "val.jsonl")})


def test_compare_prints_table(trained, data_root, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "res" / "frozen.json"
    main(["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--dataset", "synth", "--out", str(out),
          "--data-root", str(data_root)])
    capsys.readouterr()
    assert main(["compare", str(out.parent), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("method,checkpoint,rerank,seeds,synth/test/retrieval/t2v/R@1,")
    assert lines[1].startswith("frozen,frozen_synth/t/last,none,1,")
    # re-ranked metrics beside the raw ones (which stay identical), and another frame count refused by compare
    raw = json.loads(out.read_text())
    # the training seed, run version and cost of the checkpoint, and per-item outcomes that recompute the metrics
    summary = json.loads((run / "summary.json").read_text())
    assert raw["seed"] == summary["seed"] == 0 and raw["run_version"] == summary["run_version"] == "t"
    assert raw["cost"]["optimizer_steps"] == summary["cost"]["optimizer_steps"] == summary["global_step"] > 0
    assert raw["cost"]["samples_seen"] == summary["global_step"] * 4  # batch 4, one process
    assert 0 < raw["cost"]["trainable_params"] < raw["cost"]["total_params"]  # the text tower is frozen
    assert raw["cost"]["train_wall_s"] > 0
    assert assert_per_query_means(raw) == 10
    for rerank in ("dual_softmax", "qbnorm"):
        main(["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--dataset", "synth", "--out",
              str(tmp_path / "res" / f"frozen_{rerank}.json"), "--data-root", str(data_root), "--rerank", rerank,
              "eval.retrieval.qbnorm_bank=10"])
        rr = json.loads((tmp_path / "res" / f"frozen_{rerank}.json").read_text())
        assert rr["metrics"] == raw["metrics"] and rr["protocol"]["rerank"]["name"] == rerank
        assert 0 <= rr["metrics_reranked"]["t2v/R@1"] <= 100
    assert rr["protocol"]["rerank"]["bank_size"] == 10 and "v2t/R@1" not in rr["metrics_reranked"]
    other = tmp_path / "res2" / "frozen_2f.json"
    main(["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--dataset", "synth", "--out", str(other),
          "--data-root", str(data_root), "data.eval_num_frames=2"])
    capsys.readouterr()
    assert main(["compare", str(out), str(other)]) == 2
    assert "frames: 4 (frozen.json) vs 2 (frozen_2f.json)" in capsys.readouterr().err


def test_eval_refuses_missing_videos_unless_allowed(trained, data_root, tmp_path, capsys):
    run, _ = trained
    ckpt = str(run / "checkpoints" / "last.ckpt")
    root = tmp_path / "copy"
    import shutil

    shutil.copytree(data_root / "synth", root / "synth")
    rows = read_manifest(root / "synth" / "test.jsonl")
    (root / "synth" / rows[0].path).unlink()
    assert main(["eval", "--ckpt", ckpt, "--dataset", "synth", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "1 of" in err and "videos are missing" in err and "--allow-missing" in err
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", ckpt, "--dataset", "synth", "--data-root", str(root), "--allow-missing",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_missing"] == 1
    assert res["num_videos"] == len({r.video_id for r in rows}) - 1


def test_eval_refuses_unreadable_videos_unless_allowed(trained, data_root, tmp_path, capsys):
    """A test video that exists but cannot be decoded (here: truncated to its first 600 bytes) is refused with
    the count and its id, and scored around with --allow-missing; no annotation files needed."""
    import shutil

    run, _ = trained
    ckpt = str(run / "checkpoints" / "last.ckpt")
    root = tmp_path / "copy"
    shutil.copytree(data_root / "synth", root / "synth")
    rows = read_manifest(root / "synth" / "test.jsonl")
    bad = root / "synth" / rows[2].path
    bad.write_bytes(bad.read_bytes()[:600])
    n = len({r.video_id for r in rows})
    assert main(["eval", "--ckpt", ckpt, "--dataset", "synth", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"1 of {n} videos could not be read" in err and rows[2].video_id in err and "--allow-missing" in err
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", ckpt, "--dataset", "synth", "--data-root", str(root), "--allow-missing",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_missing"] == 1 and res["num_videos"] == n - 1 and rows[2].video_id in res["missing"]
    assert res["num_queries"] == sum(1 for r in rows if r.video_id != rows[2].video_id)


def test_user_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["train", "no_such_exp"]) == 2
    assert "frozen_synth" in capsys.readouterr().err
    assert main(["train", "frozen_synth", "data.bogus=1"]) == 2
    assert "data.bogus" in capsys.readouterr().err
    assert main(["train", "frozen_synth", *TINY, f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "vtp-bench data synth" in err and str(tmp_path) in err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", "--ckpt", str(bad), "--dataset", "synth"]) == 2
    assert "bad.ckpt" in capsys.readouterr().err


def test_list_prints_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "frozen" in out and "space_time_vit" in out and "synth" in out and "frozen_synth" in out


def test_eval_on_real_msvd_annotations_converted_with_video_root(trained, data_root, tmp_path, capsys):
    """The real MSVD captions of 6 test videos (several captions each), converted with --video-root where
    the files carry another extension than the dataset's (.mp4 for .avi), scored through `eval --dataset msvd`."""
    ANN = annotations_dir()
    ids = (ANN / "msvd" / "test_list.txt").read_text().split()[:6]
    captions = json.loads((ANN / "msvd" / "captions_msvd.json").read_text())
    raw = tmp_path / "MSVD" / "YouTubeClips"
    raw.mkdir(parents=True)
    clips = sorted((data_root / "synth" / "videos").glob("*.mp4"))
    for vid, clip in zip(ids, clips):
        (raw / f"{vid}.mp4").write_bytes(clip.read_bytes())  # the first one is the clip `trained` corrupted
    sub = tmp_path / "test_list.txt"
    sub.write_text("\n".join(ids) + "\n")
    root = tmp_path / "root"
    manifest = root / "msvd" / "test.jsonl"
    assert main(["data", "convert", "msvd", str(ANN / "msvd" / "captions_msvd.json"), str(sub), "--out",
                 str(manifest), "--video-root", str(raw)]) == 0
    assert "not found" not in capsys.readouterr().out  # every .avi was found as .mp4
    out = tmp_path / "msvd.json"
    run, _ = trained
    args = ["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--dataset", "msvd", "--data-root", str(root),
            "--out", str(out)]
    assert main(args) == 2  # an unreadable test video: refused, one line, with the count
    err = capsys.readouterr().err
    assert "1 of 6 videos could not be read" in err and ids[0] in err and "--allow-missing" in err
    assert main(args + ["--allow-missing"]) == 0
    res = json.loads(out.read_text())
    assert res["num_videos"] == 5 and res["num_missing"] == 1
    assert res["num_queries"] == sum(len(captions[v]) for v in ids[1:]) > 5


def test_train_seeds_one_run_per_seed(data_root, tmp_path, capsys):
    """``train --seeds 0,1``: one run dir per seed, each summary with its seed; the weights differ."""
    args = ["train", "frozen_synth", *TINY, f"data.root={data_root}", f"run.dir={tmp_path}", "run.version=s",
            "trainer.max_steps=2", "--seeds", "0,1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "seed 0: " in out and "seed 1: " in out
    runs = [tmp_path / "frozen_synth" / f"s-seed{k}" for k in (0, 1)]
    assert [json.loads((r / "summary.json").read_text())["seed"] for r in runs] == [0, 1]
    assert [json.loads((r / "summary.json").read_text())["run_version"] for r in runs] == ["s-seed0", "s-seed1"]
    digests = [json.loads((r / "summary.json").read_text())["weights_sha256_per_rank"] for r in runs]
    assert digests[0] != digests[1]
    for bad in ("0,x", "1,1", ""):
        with pytest.raises(SystemExit):
            main(["train", "frozen_synth", "--seeds", bad])
    assert "--seeds" in capsys.readouterr().err


def test_eval_options_that_do_not_fit_a_vtp_bench_checkpoint(trained, data_root, tmp_path, capsys):
    run, _ = trained
    ckpt = str(run / "checkpoints" / "last.ckpt")
    base = ["eval", "--ckpt", ckpt, "--dataset", "synth", "--data-root", str(data_root)]
    assert main(base + ["--method", "promptswitch"]) == 2
    assert "vtp_bench checkpoint of method 'frozen'" in capsys.readouterr().err
    assert main(base + ["method.name=promptswitch"]) == 2
    assert "holds a 'frozen' model" in capsys.readouterr().err
    assert main(base + ["method.embed_dim=12"]) == 2
    assert "weights do not fit" in capsys.readouterr().err
    assert main(base + ["--method", "frozen", "--out", str(tmp_path / "r.json")]) == 0  # its own method: fine


def test_a_training_manifest_with_no_full_batch_is_named(data_root, tmp_path, capsys):
    """It used to say only "lower data.batch_size", not which manifest (here: an empty one) was short."""
    empty = tmp_path / "mine" / "train.jsonl"
    empty.parent.mkdir()
    empty.write_text("")
    args = ["train", "frozen_synth", *TINY, f"data.root={data_root}", f"run.dir={tmp_path / 'runs'}",
            f"data.train=[{empty}]"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{empty}: 0 training items hold no full batch of 4" in err and "the manifest is empty" in err


def test_more_frames_than_the_checkpoint_has_embeddings_for_is_a_sentence(trained, data_root, tmp_path, capsys):
    run, _ = trained
    args = ["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--dataset", "synth", "--split", "val",
            "--data-root", str(data_root), "--out", str(tmp_path / "r.json"), "data.num_frames=8"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "temporal embeddings for 4" in err and "data.num_frames" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()
