"""Known answers through the real CLI: an oracle checkpoint (tests/helpers/oracle.py) whose scores are known in
closed form must give exactly the expected metrics through ``vtp-bench eval``, on the synthetic split and on a
multi-caption manifest of real mp4 files, with and without a planted permutation, on one process and on two; and
every registered method's ``similarity`` must rank the oracle's embeddings exactly so. Any misalignment of texts and
videos between the manifest and the metric (order, sharding, gathering, orientation) changes these numbers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

from conftest import PACKAGE_METHODS, assert_per_query_means, tiny_config
from helpers import oracle
from helpers.oracle import named_codes, oracle_checkpoint
from helpers.runs import VTP, run_clean, save_checkpoint
from vtp_bench.cli import main
from vtp_bench.config import to_dict
from vtp_bench.data.manifest import ManifestRow, read_manifest, write_manifest
from vtp_bench.data.synthetic import generate_synthetic
from vtp_bench.lit import VTPModule
from vtp_bench.metrics import retrieval_metrics
from vtp_bench.registry import METHODS

N = 10  # videos in the coded manifest
EVAL = ["data.num_frames=4", "data.img_size=32", "data.eval_batch_size=3", "data.num_workers=0"]


def _eval(ckpt: Path, dataset: str, root: Path, out: Path, *extra: str) -> dict:
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", dataset, "--data-root", str(root), "--out", str(out),
                 *extra]) == 0
    return json.loads(out.read_text())


def _expected(rows: list[ManifestRow], video_code: dict[str, int], named_code: dict[str, int], dim: int) -> dict:
    """t2v in closed form; v2t from the metric function on a similarity matrix built here from the manifest rows
    (independently of the pipeline's RetrievalSet, sharding and gathering)."""
    vids = list(dict.fromkeys(r.video_id for r in rows))
    gt = torch.tensor([vids.index(r.video_id) for r in rows])
    sim = torch.tensor([[float(dim - (video_code[v] - named_code[r.text_id]) % dim) for v in vids] for r in rows])
    out = retrieval_metrics(sim, gt)
    closed = oracle.expected_t2v([video_code[r.video_id] for r in rows], [named_code[r.text_id] for r in rows], dim)
    for k, v in closed.items():
        assert out[k] == pytest.approx(v), k  # the metric function agrees with the closed form
    return out


def _assert_metrics(got: dict, want: dict) -> None:
    assert set(want) <= set(got)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9), (k, got[k], v)


# --- a multi-caption manifest of colour-coded mp4 files ---------------------------------------------------------
@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> dict:
    """N videos, 1-3 captions each ("clip <code> ..."), rows in a shuffled order, as the msvd test split; the
    ``planted`` copy names the wrong clip in some captions (shift s: the caption's rank is N - s + 1)."""
    root = tmp_path_factory.mktemp("coded")
    rng = random.Random(4)
    codes = list(range(N))
    rng.shuffle(codes)  # video i has code codes[i]: file order, id order and code order all differ
    paths = oracle.write_coded_videos(root / "msvd" / "videos", codes)
    rows, shifts = [], {}
    for i, (code, path) in enumerate(zip(codes, paths)):
        for j in range(1 + i % 3):
            tid = f"v{i}_{j}"
            shifts[tid] = [0, 0, 1, 3, 7][(i + j) % 5]
            rows.append(dict(video_id=f"vid{(7 * i) % N:02d}", path=f"videos/{path.name}", text_id=tid, split="test",
                             text=f"clip {code} shown in a coded colour", source="test"))
    rng.shuffle(rows)
    exact = [ManifestRow(**r) for r in rows]
    planted = [ManifestRow(**{**r, "text": f"clip {(int(r['text'].split()[1]) + shifts[r['text_id']]) % N} shown"})
               for r in rows]
    write_manifest(root / "msvd" / "test.jsonl", exact)
    proot = root / "planted"
    (proot / "msvd").mkdir(parents=True)
    os.symlink(root / "msvd" / "videos", proot / "msvd" / "videos")
    write_manifest(proot / "msvd" / "test.jsonl", planted)
    video_code = {r.video_id: int(r.text.split()[1]) for r in exact}
    return {"root": root, "planted_root": proot, "exact": exact, "planted": planted, "video_code": video_code}


def test_oracle_multi_caption_manifest_is_exact(coded, tmp_path):
    ckpt = oracle_checkpoint(tmp_path / "oracle.ckpt", N)
    res = _eval(ckpt, "msvd", coded["root"], tmp_path / "r.json")
    assert res["num_videos"] == N and res["num_queries"] == len(coded["exact"]) > N
    want = _expected(coded["exact"], coded["video_code"], named_codes(coded["exact"]), N)
    assert want["t2v/R@1"] == want["v2t/R@1"] == 100.0 and want["t2v/MeanR"] == 1.0
    _assert_metrics(res["metrics"], want)


def test_oracle_planted_permutation_gives_the_exact_ranks(coded, tmp_path):
    ckpt = oracle_checkpoint(tmp_path / "oracle.ckpt", N)
    res = _eval(ckpt, "msvd", coded["planted_root"], tmp_path / "r.json")
    want = _expected(coded["planted"], coded["video_code"], named_codes(coded["planted"]), N)
    assert 0 < want["t2v/R@1"] < 100 and want["t2v/MedR"] > 1  # the planted shifts really move ranks
    _assert_metrics(res["metrics"], want)
    # each caption's own rank in closed form (shift s: rank N - s + 1, 1 for s = 0), in manifest order, and the
    # per-query lists recompute every metric, both directions, caption- and group-wise
    shifts = {r.text_id: (oracle.caption_code(r.text) - coded["video_code"][r.video_id]) % N for r in coded["planted"]}
    assert res["per_query"]["t2v/ids"] == [r.text_id for r in coded["planted"]]
    assert res["per_query"]["t2v/rank"] == [float(N - shifts[t] + 1 if shifts[t] else 1)
                                            for t in res["per_query"]["t2v/ids"]]
    assert res["per_query"]["v2t/ids"] == list(dict.fromkeys(r.video_id for r in coded["planted"]))
    assert assert_per_query_means(res) == 10
    group = _eval(ckpt, "msvd", coded["planted_root"], tmp_path / "g.json", "--v2t", "group")
    assert group["protocol"]["v2t"] == "group" and assert_per_query_means(group) == 10


def test_oracle_two_process_eval_is_exact(coded, tmp_path):
    """The same planted answer from ``vtp-bench eval --devices 2`` (sharded encoding, gathered, trimmed): the
    oracle is loaded in both processes as a plugin."""
    ckpt = oracle_checkpoint(tmp_path / "oracle.ckpt", N)
    out = tmp_path / "r2.json"
    r = run_clean([VTP, "eval", "--ckpt", str(ckpt), "--dataset", "msvd", "--data-root", str(coded["planted_root"]),
                   "--out", str(out), "--accelerator", "cpu", "--devices", "2"], tmp_path,
                  env={"VTP_PLUGINS": str(Path(oracle.__file__).resolve())})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["devices"] == 2
    _assert_metrics(res["metrics"], _expected(coded["planted"], coded["video_code"], named_codes(coded["planted"]), N))


# --- the synthetic split (its pixels carry no code: the oracle reads the video id) -------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_oracle")
    generate_synthetic(root / "synth", num_videos=36, seed=11, splits=(16, 8, 12), grounding_videos=0, progress=False)
    return root


@pytest.mark.parametrize("planted", [False, True], ids=["exact", "planted"])
def test_oracle_on_the_synthetic_split(synth, tmp_path, planted):
    rows = read_manifest(synth / "synth" / "test.jsonl")
    n = len({r.video_id for r in rows})
    perm = list(range(n))
    random.Random(5).shuffle(perm)
    video_code = {r.video_id: perm[i] for i, r in enumerate(rows)}
    named = {r.text_id: (video_code[r.video_id] + (i % 4 if planted else 0)) % n for i, r in enumerate(rows)}
    ckpt = oracle_checkpoint(tmp_path / "o.ckpt", n, video_codes=video_code,
                             text_codes={r.text: named[r.text_id] for r in rows})
    res = _eval(ckpt, "synth", synth, tmp_path / "r.json")
    want = _expected(rows, video_code, named, n)
    assert (want["t2v/R@1"] == 100.0) != planted
    _assert_metrics(res["metrics"], want)


# --- every registered method's similarity, on the oracle's embeddings, through the CLI --------------------------
@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_method_similarity_ranks_the_oracle_exactly(name, coded, tmp_path, monkeypatch):
    """The method's own checkpoint and ``similarity``, with its encoders replaced by the oracle's (pooled
    embeddings plus token-level copies with masks): the planted ranks must come out exactly."""
    cls = METHODS.get(name)
    # the oracle's encoders read the clip only, whatever else the method reads (DemoVLP: region boxes)
    monkeypatch.setattr(cls, "data_inputs", classmethod(lambda c, cfg: frozenset({"video"})))
    monkeypatch.setattr(cls, "encode_video", lambda self, batch: oracle.encode_video(batch, N))
    monkeypatch.setattr(cls, "encode_text", lambda self, batch: oracle.encode_text(batch, N))
    ckpt = save_checkpoint(VTPModule(to_dict(tiny_config(name, *EVAL))), tmp_path / f"{name}.ckpt")
    res = _eval(ckpt, "msvd", coded["planted_root"], tmp_path / "r.json")
    _assert_metrics(res["metrics"], _expected(coded["planted"], coded["video_code"], named_codes(coded["planted"]), N))


def test_an_evaluation_that_scores_nothing_writes_nothing(coded, tmp_path, monkeypatch, capsys):
    """A loader that yields no batch used to exit 0 with ``"metrics": {}`` in the results file."""
    from vtp_bench.data.datamodule import VideoTextDataModule

    ckpt = oracle_checkpoint(tmp_path / "oracle.ckpt", N)
    monkeypatch.setattr(VideoTextDataModule, "test_dataloader", lambda self: [])
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "msvd", "--data-root", str(coded["root"]), "--out",
                 str(out)]) == 2
    assert not out.exists() and "scored nothing" in capsys.readouterr().err
