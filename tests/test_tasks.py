"""Evaluation tasks through ``vtp-bench eval --task``: known answers from the oracle (tests/helpers/oracle.py) on
colour-coded mp4 files, for zero-shot classification (and the generic handling of unreadable videos)."""

from __future__ import annotations

import json

import pytest

from conftest import assert_per_query_means
from helpers import oracle
from helpers.oracle import named_codes, oracle_checkpoint
from vtp_bench.cli import main
from vtp_bench.data.manifest import ManifestRow, write_manifest

C = 5  # classes "clip 0" .. "clip 4"


@pytest.fixture(scope="module")
def coded_classes(tmp_path_factory) -> dict:
    """12 videos of codes 0..4 (several per code), each labelled with a class: the true class of video i is
    ``truth[i]``; where it differs from the video's code, the oracle ranks the true class at
    ((code - class) mod C) + 1."""
    root = tmp_path_factory.mktemp("zs")
    codes = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 2, 2]
    truth = [0, 1, 2, 3, 4, 1, 1, 0, 3, 2, 2, 4]
    paths = oracle.write_coded_videos(root / "ucf101" / "videos", sorted(set(codes)))
    by_code = {int(p.stem.split("_")[1]): p for p in paths}
    rows = [ManifestRow(video_id=f"v{i:02d}", path=f"videos/{by_code[c].name}", text=f"clip {t}", text_id=f"v{i:02d}",
                        split="test1", label=f"c{t}", source="test") for i, (c, t) in enumerate(zip(codes, truth))]
    write_manifest(root / "ucf101" / "test1.jsonl", rows)
    return {"root": root, "codes": codes, "truth": truth}


def _expected(codes: list[int], truth: list[int]) -> dict[str, float]:
    ranks = [(c - t) % C + 1 for c, t in zip(codes, truth)]
    per_class = {t: [r == 1 for r, tt in zip(ranks, truth) if tt == t] for t in set(truth)}
    return {"top1": 100.0 * sum(r == 1 for r in ranks) / len(ranks),
            "top5": 100.0 * sum(r <= 5 for r in ranks) / len(ranks),
            "mean_class_acc": 100.0 * sum(sum(v) / len(v) for v in per_class.values()) / len(per_class)}


def test_zeroshot_classification_known_answer(coded_classes, tmp_path):
    ckpt = oracle_checkpoint(tmp_path / "o.ckpt", C)
    out = tmp_path / "zs.json"
    assert main(["eval", "--task", "zeroshot_cls", "--ckpt", str(ckpt), "--dataset", "ucf101", "--split", "test1",
                 "--data-root", str(coded_classes["root"]), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "zeroshot_cls" and res["num_videos"] == 12 and res["num_classes"] == C
    assert res["prompt_template"] == "{}"
    want = _expected(coded_classes["codes"], coded_classes["truth"])
    assert 0 < want["top1"] < 100 and want["mean_class_acc"] != want["top1"]
    for k, v in want.items():
        assert res["metrics"][k] == pytest.approx(v), k
    assert assert_per_query_means(res) == 3 and res["per_query"]["ids"] == [f"v{i:02d}" for i in range(12)]


def test_zeroshot_template_from_the_config_and_unreadable_videos(coded_classes, tmp_path, capsys):
    """An unreadable video is refused, then left out with --allow-missing (its class counted without it); a
    template from the config is the one used."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(coded_classes["root"], root)
    bad = root / "ucf101" / "videos" / "coded_04.mp4"  # videos 4 and 9 (code 4)
    bad.write_bytes(bad.read_bytes()[:500])
    ckpt = oracle_checkpoint(tmp_path / "o.ckpt", C)
    args = ["eval", "--task", "zeroshot_cls", "--ckpt", str(ckpt), "--dataset", "ucf101", "--split", "test1",
            "--data-root", str(root)]
    assert main(args) == 2
    assert "2 of 12 videos could not be read" in capsys.readouterr().err
    out = tmp_path / "zs.json"
    assert main(args + ["--allow-missing", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    keep = [i for i, c in enumerate(coded_classes["codes"]) if c != 4]
    want = _expected([coded_classes["codes"][i] for i in keep], [coded_classes["truth"][i] for i in keep])
    assert res["num_missing"] == 2 and res["num_videos"] == 10 and sorted(res["missing"]) == ["v04", "v09"]
    for k, v in want.items():
        assert res["metrics"][k] == pytest.approx(v), k
    # the template is applied: "clip 0 {}" makes every prompt name clip 0, so all classes tie for every video and
    # the expected-value tie rule gives exactly chance
    assert main(args + ["--allow-missing", "--out", str(out), "--overwrite",
                        "eval.zeroshot_cls.prompt_template=clip 0 {}"]) == 0
    res = json.loads(out.read_text())
    assert res["prompt_template"] == "clip 0 {}"
    assert res["metrics"]["top1"] == pytest.approx(100 / C) and res["metrics"]["top5"] == 100.0


def test_retrieval_protocol_options_are_applied_and_named(tmp_path):
    """``eval.retrieval.v2t=group`` and ``eval.retrieval.protocol=xpool`` (group-wise v2t, LSMDC's skipped clip)
    change the counting exactly as the metric function says, and the results JSON names the protocol; the default
    stays caption-wise over every video."""
    from vtp_bench.data.manifest import read_manifest

    root = tmp_path / "data"
    codes = [0, 1, 2, 3]
    paths = oracle.write_coded_videos(root / "lsmdc" / "videos", codes)
    skip = "1012_Unbreakable_00.05.16.065-00.05.21.941"
    ids = ["0001_A", skip, "0002_B", "0003_C"]
    rows = []
    for vid, code, path in zip(ids, codes, paths):
        for j, shift in enumerate((0, 0, 1)):  # three captions each; the third names the next clip (a miss)
            named = (code + shift) % 4
            rows.append(ManifestRow(video_id=vid, path=f"videos/{path.name}", text=f"clip {named}",
                                    text_id=f"{vid}_{j}", split="test", source="test"))
    write_manifest(root / "lsmdc" / "test.jsonl", rows)
    ckpt = oracle_checkpoint(tmp_path / "o.ckpt", 4)
    res = {}
    variants = {"default": [], "group": ["eval.retrieval.v2t=group"], "xpool": ["eval.retrieval.protocol=xpool"]}
    for name, extra in variants.items():
        out = tmp_path / f"{name}.json"
        assert main(["eval", "--ckpt", str(ckpt), "--dataset", "lsmdc", "--data-root", str(root), "--out", str(out),
                     *extra]) == 0
        res[name] = json.loads(out.read_text())
    assert res["default"]["protocol"] == {"name": "vtp_bench", "v2t": "caption", "exclude": [], "excluded": [],
                                          "rerank": {"name": "none"}}
    assert res["group"]["protocol"]["v2t"] == "group"
    assert res["xpool"]["protocol"] == {"name": "xpool", "v2t": "group", "exclude": [skip], "excluded": [skip],
                                        "rerank": {"name": "none"}}
    assert res["xpool"]["num_videos"] == 3 and res["default"]["num_videos"] == 4
    import torch

    from vtp_bench.metrics import retrieval_metrics

    all_rows = read_manifest(root / "lsmdc" / "test.jsonl")
    video_code = dict(zip(ids, codes))
    for name, v2t, keep in (("default", "caption", ids), ("group", "group", ids), ("xpool", "group", [i for i in ids
                                                                                                      if i != skip])):
        rows_k = [r for r in all_rows if r.video_id in keep]
        vids = list(dict.fromkeys(r.video_id for r in rows_k))
        named = named_codes(rows_k)
        sim = torch.tensor([[float(4 - (video_code[v] - named[r.text_id]) % 4) for v in vids] for r in rows_k])
        want = retrieval_metrics(sim, torch.tensor([vids.index(r.video_id) for r in rows_k]), v2t_mode=v2t)
        for k, v in want.items():
            assert res[name]["metrics"][k] == pytest.approx(v), (name, k)
    assert res["group"]["metrics"]["v2t/MeanR"] != res["default"]["metrics"]["v2t/MeanR"]


# --- temporal grounding: the coded_grounding fixture (tests/conftest.py) ----------------------------------------------
def test_grounding_known_answer(coded_grounding, tmp_path):
    """A one-hot oracle (a clip scores 1 for the code it shows, else 0): every query's best moment is exactly
    its code's seconds, so R@1 at every IoU and mIoU are 100; with every ground truth moved, the closed form."""
    ckpt = oracle_checkpoint(tmp_path / "o.ckpt", 5, text_onehot=True)
    out = tmp_path / "g.json"
    assert main(["eval", "--task", "grounding", "--ckpt", str(ckpt), "--dataset", "charades_sta", "--data-root",
                 str(coded_grounding), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "grounding" and res["num_queries"] == 9 and res["num_videos"] == 3
    assert res["num_clips"] == 18 and res["moment_score"] == "contrast"
    m = res["metrics"]
    for k in ("R@1,IoU=0.1", "R@1,IoU=0.3", "R@1,IoU=0.5", "R@1,IoU=0.7", "R@5,IoU=0.7"):
        assert m[k] == pytest.approx(100.0), k
    assert m["mIoU"] == pytest.approx(100.0)
    # chance by brute force: every query's candidates are the 21 runs of 1 s clips in its 6 s video
    spans = [(i, j + 1) for i in range(6) for j in range(i, 6)]
    rows = [(r["start"], r["end"]) for r in map(json.loads, (coded_grounding / "charades_sta" / "test.jsonl")
                                                 .read_text().splitlines())]
    def iou(a, b):
        return max(0.0, min(a[1], b[1]) - max(a[0], b[0])) / (max(a[1], b[1]) - min(a[0], b[0]))
    want = sum(sum(iou(c, g) > 0.5 for c in spans) / len(spans) for g in rows) / len(rows)
    assert res["chance"]["R@1,IoU=0.5"] == pytest.approx(100 * want)

    # planted: every ground truth of L >= 2 seconds loses its last second; the top-1 moment stays the code's
    # seconds, so its IoU with the ground truth is (L - 1) / L
    from vtp_bench.data.manifest import read_manifest

    planted = tmp_path / "planted"
    (planted / "charades_sta").mkdir(parents=True)
    (planted / "charades_sta" / "videos").symlink_to(coded_grounding / "charades_sta" / "videos")
    rows = read_manifest(coded_grounding / "charades_sta" / "test.jsonl")
    write_manifest(planted / "charades_sta" / "test.jsonl",
                   [ManifestRow(**{**r.to_dict(), "end": r.end - 1 if r.end - r.start >= 2 else r.end})
                    for r in rows])
    out2 = tmp_path / "g2.json"
    assert main(["eval", "--task", "grounding", "--ckpt", str(ckpt), "--dataset", "charades_sta", "--data-root",
                 str(planted), "--out", str(out2), "eval.grounding.clip_seconds=1.0"]) == 0
    ious = [(r.end - r.start - 1) / (r.end - r.start) if r.end - r.start >= 2 else 1.0 for r in rows]
    assert 0 < sum(i > 0.7 for i in ious) < len(ious)
    got = json.loads(out2.read_text())["metrics"]
    for m in (0.1, 0.3, 0.5, 0.7):
        assert got[f"R@1,IoU={m}"] == pytest.approx(100 * sum(i > m for i in ious) / len(ious)), m
    assert got["mIoU"] == pytest.approx(100 * sum(ious) / len(ious))
    res2 = json.loads(out2.read_text())
    assert assert_per_query_means(res2) == len(got)
    assert res2["per_query"]["mIoU"] == pytest.approx([100 * i for i in ious])  # in query order
    assert res2["per_query"]["ids"] == [r.text_id for r in rows]


def test_moment_scores_closed_form():
    import torch

    from vtp_bench.data.inputs import clip_windows
    from vtp_bench.methods.base import span_scores as moment_scores
    from vtp_bench.tasks.grounding import moments

    assert clip_windows(2.5, 1.0) == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    assert moments(clip_windows(3.0, 1.0), 2) == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]
    sim = torch.tensor([[1.0, 4.0, 2.0, 3.0]], dtype=torch.float64)
    spans = torch.tensor([[1, 1], [1, 2], [0, 3]])
    assert moment_scores(sim, spans, "mean").tolist() == [[4.0, 3.0, 2.5]]
    assert moment_scores(sim, spans, "contrast").tolist() == [[4.0 - 2.0, 3.0 - 2.0, 0.0]]


def test_pooled_moment_scores_are_the_cosine_of_the_mean_clip():
    import torch
    import torch.nn.functional as F

    from vtp_bench.methods.base import Embeddings
    from vtp_bench.methods.frozen import Frozen

    g = torch.Generator().manual_seed(0)
    clips, text = torch.randn(5, 8, generator=g), torch.randn(2, 8, generator=g)
    spans = torch.tensor([[0, 0], [1, 3], [0, 4]])
    got = Frozen.moment_scores(None, Embeddings(text), Embeddings(clips), spans, "pooled")  # type: ignore[arg-type]
    for k, (i, j) in enumerate(spans.tolist()):
        mean = F.normalize(clips[i: j + 1], dim=-1).mean(0)
        assert torch.allclose(got[:, k], F.cosine_similarity(text, mean[None]), atol=1e-6)


def test_synth_grounding_default_is_the_held_out_split(tmp_path):
    """``eval --task grounding --dataset synth`` scores the held-out grounding videos, none of which a grounding head
    trains or validates on (it used to score every grounding video, the head's training videos included)."""
    from vtp_bench.data.manifest import read_manifest
    from vtp_bench.data.synthetic import generate_synthetic
    from vtp_bench.tasks.grounding import Grounding

    generate_synthetic(tmp_path, num_videos=0, grounding_videos=10, progress=False)
    split = Grounding().default_split("synth")
    held_out = {r.video_id for r in read_manifest(tmp_path / f"{split}.jsonl")}
    trained = {r.video_id for k in ("train", "val") for r in read_manifest(tmp_path / f"grounding_{k}.jsonl")}
    assert split == "grounding_test" and held_out and not held_out & trained
