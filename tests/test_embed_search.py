"""Embedding export and search through the CLI (``vtp-bench embed`` / ``search``), and the errors a new user meets.

- The exported file scored by hand (the method's own ``similarity``; plain numpy for a pooled-cosine model) gives
  exactly the metrics of a separate ``vtp-bench eval`` run on the same checkpoint and split.
- Search: an oracle checkpoint (tests/helpers/oracle.py: the rank of every video for every caption is known in
  closed form) must return, for a caption of the synthetic test split, its own video and then exactly the known
  top 10; the faiss path must return the exact path's top 10.
- Our R@K against torchmetrics' retrieval metrics on a random case (an independent implementation).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_per_query_means, tiny_config
from helpers.oracle import oracle_checkpoint
from helpers.runs import save_checkpoint
from vtp_bench.cli import main
from vtp_bench.config import to_dict
from vtp_bench.data.manifest import read_manifest
from vtp_bench.data.synthetic import generate_synthetic
from vtp_bench.embed import EmbeddingsError, load_embeddings
from vtp_bench.lit import VTPModule
from vtp_bench.methods.base import Embeddings, Method
from vtp_bench.metrics import retrieval_metrics
from vtp_bench.search import FaissParams, build_faiss, exact_topk, faiss_topk, normalised

N_TEST = 14  # videos in the test split: more than the 10 a search returns


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed")
    generate_synthetic(root / "synth", num_videos=22, seed=5, splits=(4, 4, N_TEST), grounding_videos=0,
                       progress=False)
    return root


@pytest.fixture(scope="module")
def coded_oracle(synth, tmp_path_factory) -> dict:
    """An oracle checkpoint on the synthetic test split: video i has code perm[i]; every caption names its own
    video's code, so caption k's rank of video g is ((code(g) - code(k)) mod N) + 1."""
    rows = read_manifest(synth / "synth" / "test.jsonl")
    vids = list(dict.fromkeys(r.video_id for r in rows))
    assert len(vids) == N_TEST
    perm = list(range(N_TEST))
    random.Random(8).shuffle(perm)
    video_code = dict(zip(vids, perm))
    ckpt = oracle_checkpoint(tmp_path_factory.mktemp("oracle") / "o.ckpt", N_TEST, video_codes=video_code,
                             text_codes={r.text: video_code[r.video_id] for r in rows})
    out = tmp_path_factory.mktemp("gallery") / "gallery.safetensors"
    assert main(["embed", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(synth), "--out",
                 str(out)]) == 0
    return {"ckpt": ckpt, "out": out, "rows": rows, "video_code": video_code, "vids": vids}


def _search(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["search", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_search_returns_the_caption_s_own_video_and_the_known_top10(coded_oracle, capsys):
    rows, code = coded_oracle["rows"], coded_oracle["video_code"]
    by_code = {c: v for v, c in code.items()}
    row = rows[3]
    hits = _search(capsys, "--index", str(coded_oracle["out"]), "--query", row.text, "-k", "10")[0]["hits"]
    assert hits[0]["video_id"] == row.video_id
    k = code[row.video_id]
    assert [h["video_id"] for h in hits] == [by_code[(k + j) % N_TEST] for j in range(10)]  # closed form
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # the faiss path returns the exact path's top 10 (exact inner product and IVF with every cell probed)
    for extra in (["--faiss", "flat"], ["--faiss", "ivf", "--nlist", "2", "--nprobe", "2"]):
        fhits = _search(capsys, "--index", str(coded_oracle["out"]), "--query", row.text, "-k", "10", *extra)
        assert [h["video_id"] for h in fhits[0]["hits"]] == [h["video_id"] for h in hits], extra
        assert [h["score"] for h in fhits[0]["hits"]] == pytest.approx(scores, abs=1e-5)


def test_pooled_export_scored_with_numpy_equals_eval(coded_oracle, synth, tmp_path):
    """Plain numpy on the file (no vtp_bench model): the cosine ranks give the eval's R@K; ids and rows agree."""
    res = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(coded_oracle["ckpt"]), "--dataset", "synth", "--data-root", str(synth),
                 "--out", str(res)]) == 0
    metrics = json.loads(res.read_text())["metrics"]
    from safetensors.numpy import load_file

    t = load_file(str(coded_oracle["out"]))
    meta = json.loads(coded_oracle["out"].with_suffix(".json").read_text())
    v = t["video.pooled"] / np.linalg.norm(t["video.pooled"], axis=1, keepdims=True)
    q = t["text.pooled"] / np.linalg.norm(t["text.pooled"], axis=1, keepdims=True)
    sim = q @ v.T
    gt = t["text_to_video"]
    ranks = (sim > sim[np.arange(len(gt)), gt][:, None]).sum(1) + 1  # no ties in the oracle's scores
    for k in (1, 5, 10):
        assert metrics[f"t2v/R@{k}"] == pytest.approx(100 * (ranks <= k).mean())
    assert meta["eval"]["metrics"] == metrics and meta["similarity"] == "pooled_cosine"
    # the sidecar's per-item outcomes are the ranks computed here from the exported tensors, in text order
    assert meta["per_query"]["t2v/rank"] == [float(r) for r in ranks]
    assert meta["per_query"]["t2v/ids"] == meta["text_ids"] and "per_query" not in meta["eval"]
    assert assert_per_query_means({"metrics": metrics, "per_query": meta["per_query"]}) == 10
    assert [meta["video_ids"][i] for i in gt] == [r.video_id for r in coded_oracle["rows"]]
    assert meta["text_ids"] == [r.text_id for r in coded_oracle["rows"]]
    assert meta["checkpoint_sha256"] and meta["manifest_sha256"] == json.loads(res.read_text())["manifest_sha256"]


def test_token_level_method_export_equals_eval_and_search_uses_its_similarity(synth, tmp_path, capsys):
    """LocVTP scores with clip-word tokens: the file keeps them, the method's similarity on the file gives the
    eval's metrics exactly, the exact search ranks by it, and faiss is refused with the reason."""
    module = VTPModule(to_dict(tiny_config("locvtp")))
    ckpt = save_checkpoint(module, tmp_path / "locvtp.ckpt")
    out, res = tmp_path / "g.safetensors", tmp_path / "r.json"
    common = ["--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(synth)]
    assert main(["embed", *common, "--out", str(out)]) == 0
    assert main(["eval", *common, "--out", str(res)]) == 0
    emb = load_embeddings(out)
    assert emb.meta["similarity"] == "method" and emb.video.tokens is not None and emb.text.tokens is not None
    module.eval()
    sim = module.method.similarity(emb.text, emb.video)
    assert retrieval_metrics(sim, emb.text_to_video) == json.loads(res.read_text())["metrics"]
    query = emb.meta["texts"][0]
    hits = _search(capsys, "--index", str(out), "--query", query, "-k", "5")[0]["hits"]
    with torch.no_grad():
        q = module.method.encode_text({"text": [query]})
        want = module.method.similarity(q, emb.video)[0].topk(5)
    assert [h["video_id"] for h in hits] == [emb.video_ids[i] for i in want.indices]
    assert [h["score"] for h in hits] == pytest.approx(want.values.tolist(), abs=1e-5)
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--query", query, "--faiss", "flat"]) == 2
    assert "cannot hold" in capsys.readouterr().err
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": VTPModule(to_dict(tiny_config("locvtp", "seed=3"))).state_dict(),
                "hyper_parameters": {"config": to_dict(module.cfg)}}, other)
    assert main(["search", "--index", str(out), "--ckpt", str(other), "--query", query]) == 2
    assert "is not the checkpoint that made the gallery" in capsys.readouterr().err


class _Cosine(Method):
    """The default similarity (cosine of pooled embeddings), nothing else."""


def test_faiss_indexes_return_the_exact_top10_on_a_small_gallery():
    g = torch.Generator().manual_seed(0)
    video, query = torch.randn(500, 32, generator=g), torch.randn(20, 32, generator=g)
    s, i = exact_topk(_Cosine(None), Embeddings(query), Embeddings(video), 10, chunk=64)  # chunked running top-k
    full = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(video, dim=1).T
    assert torch.equal(i, full.topk(10, dim=1).indices)
    params = FaissParams(nlist=8, nprobe=8, ef_search=500)  # every cell probed / a wide beam: exact here
    for kind in ("flat", "ivf", "hnsw"):
        fs, fi = faiss_topk(build_faiss(normalised(video), kind, params), normalised(query), 10, params)
        assert np.array_equal(fi, i.numpy()), kind
        assert np.allclose(fs, s.numpy(), atol=1e-5), kind


def test_missing_faiss_names_the_install(monkeypatch):
    from vtp_bench.search import import_faiss

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(EmbeddingsError, match="pip install faiss-cpu"):
        import_faiss()


def test_our_recall_at_k_matches_torchmetrics():
    """A random case without ties, several captions per video: t2v R@K is torchmetrics' recall (one relevant
    video per caption), caption-wise v2t R@K its hit rate (any of the video's captions in the top K)."""
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalRecall

    g = torch.Generator().manual_seed(2)
    n_video = 40
    gt = torch.cat([torch.arange(n_video), torch.randint(0, n_video, (35,), generator=g)])
    sim = torch.randn(len(gt), n_video, generator=g, dtype=torch.float64)
    ours = retrieval_metrics(sim, gt)
    for k in (1, 5, 10):
        rel = torch.nn.functional.one_hot(gt, n_video).bool()
        rows = torch.arange(len(gt))[:, None].expand_as(sim)
        t2v = RetrievalRecall(top_k=k)(sim.flatten(), rel.flatten(), indexes=rows.flatten())
        cols = torch.arange(n_video)[None, :].expand_as(sim)
        v2t = RetrievalHitRate(top_k=k)(sim.t().flatten(), rel.t().flatten(), indexes=cols.t().flatten())
        assert ours[f"t2v/R@{k}"] == pytest.approx(100 * t2v.item(), abs=1e-4)  # torchmetrics averages in fp32
        assert ours[f"v2t/R@{k}"] == pytest.approx(100 * v2t.item(), abs=1e-4)


# --- errors a new user meets ----------------------------------------------------------------------------------
def test_a_text_file_is_not_a_checkpoint(synth, tmp_path, capsys):
    notes = tmp_path / "model.ckpt"
    notes.write_text("these are my notes, not a model\n")
    for trust in ([], ["--trust-checkpoint"]):
        assert main(["eval", "--ckpt", str(notes), "--dataset", "synth", "--data-root", str(synth), *trust]) == 2
        err = capsys.readouterr().err
        assert "is not a checkpoint" in err and "--trust-checkpoint" not in err


@pytest.mark.parametrize("how", ["absent", "unreadable"])
def test_allow_missing_with_nothing_readable_says_so(coded_oracle, synth, tmp_path, capsys, how):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synth / "synth", root / "synth")
    for r in read_manifest(root / "synth" / "test.jsonl"):
        f = root / "synth" / r.path
        if how == "absent":
            f.unlink(missing_ok=True)
        else:
            f.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(coded_oracle["ckpt"]), "--dataset", "synth", "--data-root", str(root),
                 "--allow-missing"]) == 2
    err = capsys.readouterr().err
    assert "nothing readable is left to score" in err and "Traceback" not in err


@pytest.mark.parametrize("args, says", [(["-q", ""], "empty query"), (["-q", "x", "-k", "0"], "1 or more"),
                                        (["-q", "x", "-k", "-3"], "1 or more"), (["-q", "x", "-k", "a"], "integer")])
def test_search_refuses_an_empty_query_and_k_below_one(args, says, tmp_path, capsys):
    from vtp_bench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--index", str(tmp_path / "none.safetensors"), *args])
    assert e.value.code == 2 and says in capsys.readouterr().err
