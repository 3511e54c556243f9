"""LocVTP: every loss term against a per-pair loop on tiny tensors, correspondence discovery (padding and special
tokens excluded), the context projection head, clip positions from the batch's frame times, clip encoding,
the chunked clip-word retrieval score, configs and the paper-size parameter count."""

from __future__ import annotations

import math
import os
import random
import socket
from itertools import product

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from conftest import tiny_config
from vtp_bench.config import ConfigError, load_config
from vtp_bench.lit import build_method
from vtp_bench.methods.base import Embeddings
from vtp_bench.methods.locvtp import LocVTP, LocVTPConfig, clip_word_score, splice_points, word_mask


def _method(*overrides: str) -> LocVTP:
    torch.manual_seed(0)
    return build_method(tiny_config("locvtp", *overrides)).double().eval()  # eval: no dropout


# ------------------------------------------------------------------------------------------ tokens
def test_word_mask_drops_special_and_padding_tokens():
    from vtp_bench.models.build import build_encoder

    texts = ["a red circle moves left", "blue", "", "a very long caption " * 3]
    hf = build_encoder({"name": "hf_text", "preset": "tiny"}, "t")
    enc = hf.tokenizer(texts, padding=True, return_special_tokens_mask=True, return_tensors="pt")
    expected = enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()
    assert torch.equal(word_mask(hf(texts).mask), expected)
    assert expected[2].sum() == 0 and expected.sum() > 0

    ct = build_encoder({"name": "clip_text", "preset": "tiny"}, "t")
    ids = ct.tokenize(texts)
    real = ct(texts).mask
    expected = real & (ids != 49406) & (ids != 49407)  # <start_of_text>, <end_of_text>; padding is 0
    assert torch.equal(word_mask(real), expected)


# ------------------------------------------------------------------------------------------ reference loops
def _nce(q, pos, negs, tau):
    logits = [float(q @ pos) / tau] + [float(q @ n) / tau for n in negs]
    return -logits[0] + math.log(sum(math.exp(x) for x in logits))


def _reference(m: LocVTP, clips, clip_mask, words, wmask, pos):
    """Per clip / word / pair, in plain loops: the terms as docs/methods/locvtp.md defines them."""
    cfg = m.cfg
    tau = cfg.fine_temperature
    b_, c_, _ = clips.shape
    v, w = F.normalize(clips, dim=-1), F.normalize(words, dim=-1)
    rw = {b: [l for l in range(words.shape[1]) if wmask[b, l]] for b in range(b_)}
    rc = {b: [c for c in range(c_) if clip_mask[b, c]] for b in range(b_)}
    same = cfg.negatives in ("sentence", "both")
    other = cfg.negatives in ("batch", "both")

    def neg_words(b, positives):
        out = [w[b, l] for l in rw[b] if l not in positives] if same else []
        return out + ([w[b2, l] for b2 in range(b_) if b2 != b for l in rw[b2]] if other else [])

    def neg_clips(b, best):
        out = [v[b, c] for c in rc[b] if c != best] if same else []
        return out + ([v[b2, c] for b2 in range(b_) if b2 != b for c in rc[b2]] if other else [])

    def contexts(b, i):
        return [j for j in rc[b] if j != i and (cfg.context_window <= 0 or abs(j - i) <= cfg.context_window)]

    def warp(b, i, j):
        return F.normalize(m.context(clips[b, j], pos[b, i] - pos[b, j]), dim=-1)

    sums = dict.fromkeys(["fine_c2w", "temporal_c2w", "fine_w2c", "temporal_w2c"], 0.0)
    counts = dict.fromkeys(sums, 0)
    tops = {}
    for b in range(b_):
        for c in rc[b]:
            ranked = sorted(rw[b], key=lambda l: -float(v[b, c] @ w[b, l]))
            tops[b, c] = ranked[: cfg.top_k_words]
            for p in tops[b, c]:
                sums["fine_c2w"] += _nce(v[b, c], w[b, p], neg_words(b, tops[b, c]), tau)
                counts["fine_c2w"] += 1
                for j in contexts(b, c):
                    sums["temporal_c2w"] += _nce(warp(b, c, j), w[b, p], neg_words(b, tops[b, c]), tau)
                    counts["temporal_c2w"] += 1
        for l in rw[b]:
            if not rc[b]:
                continue
            best = max(rc[b], key=lambda c: float(w[b, l] @ v[b, c]))
            sums["fine_w2c"] += _nce(w[b, l], v[b, best], neg_clips(b, best), tau)
            counts["fine_w2c"] += 1
            for j in contexts(b, best):
                sums["temporal_w2c"] += _nce(w[b, l], warp(b, best, j), neg_clips(b, best), tau)
                counts["temporal_w2c"] += 1
    weight = {"fine_c2w": cfg.fine_weight, "fine_w2c": cfg.fine_weight, "temporal_c2w": cfg.temporal_weight,
              "temporal_w2c": cfg.temporal_weight}
    return {k: weight[k] * sums[k] / max(counts[k], 1) for k in sums}, tops


def _crafted(seed: int = 0, d: int = 32):
    """3 videos x 3 clips (video 2 has a padding clip), captions of 6 / 4 / 2 tokens ([CLS] ... [SEP], padding).
    The [CLS] and padding positions copy a clip's feature, so discovery would pick them if it saw them."""
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(3, 3, d, generator=g, dtype=torch.float64)
    clip_mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    words = torch.randn(3, 6, d, generator=g, dtype=torch.float64)
    lengths = [6, 4, 2]
    attn = torch.tensor([[i < n for i in range(6)] for n in lengths])
    for b in range(3):
        words[b, 0] = 5 * clips[b, 0]  # [CLS]
        words[b, lengths[b] - 1] = 5 * clips[b, 1]  # [SEP]
        words[b, lengths[b]:] = 5 * clips[b, 2]  # padding
    pos = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.7, 2.2], [0.0, 1.0, 2.0]], dtype=torch.float64)
    return clips, clip_mask, words, attn, pos


@pytest.mark.parametrize("negatives,top_k,head,window", [
    ("sentence", 1, "residual", 0), ("batch", 1, "additive", 0), ("both", 2, "residual", 1),
    ("sentence", 3, "additive", 1),
])
def test_fine_and_temporal_terms_equal_the_loops(negatives, top_k, head, window):
    m = _method(f"method.negatives={negatives}", f"method.top_k_words={top_k}", f"method.context_head={head}",
                f"method.context_window={window}", "method.fine_weight=2.0", "method.temporal_weight=3.0",
                "method.num_clips=3", "data.num_frames=3")
    clips, clip_mask, words, attn, pos = _crafted()
    wmask = word_mask(attn)
    with torch.no_grad():
        terms = m._fine_and_temporal(clips, clip_mask, words, wmask, pos)
        ref, tops = _reference(m, clips, clip_mask, words, wmask, pos)
        # had discovery seen [CLS]/[SEP]/padding (each a scaled copy of a clip), it would have picked them
        seen_all, _ = _reference(m, clips, clip_mask, words, attn, pos)
    assert terms.keys() == ref.keys()
    for k in ref:
        assert terms[k].item() == pytest.approx(ref[k], rel=1e-10), k
        assert seen_all[k] != pytest.approx(ref[k], rel=1e-6), k
    assert all(0 < l < 5 for (b, _), t in tops.items() if b == 0 for l in t)  # real words of caption 0 only
    assert m.train_stats()["matched_words_per_clip"].item() == pytest.approx(
        sum(len(t) for t in tops.values()) / int(clip_mask.sum()))


def test_word_to_clip_can_be_switched_off():
    m = _method("method.word_to_clip=false")
    clips, clip_mask, words, attn, pos = _crafted()
    terms = m._fine_and_temporal(clips[:, :2], clip_mask[:, :2], words, word_mask(attn), pos[:, :2])
    assert set(terms) == {"fine_c2w", "temporal_c2w"}


def _batch(n: int, frames: int, size: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    words = ["red", "blue", "circle", "square", "moves", "left", "grows", "while", "a", "small"]
    texts = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (2 + k % 5,), generator=g)) for k in range(n)]
    return {"video": torch.randn(n, frames, 3, size, size, generator=g, dtype=torch.float64),
            "video_mask": torch.ones(n, frames, dtype=torch.bool), "text": texts}


def test_losses_coarse_terms_equal_infonce_loops():
    m = _method("method.coarse_weight=0.5")
    batch = _batch(5, 2)
    with torch.no_grad():
        terms = m.losses(batch)
        v = F.normalize(m.encode_video(batch).pooled, dim=-1)
        t = F.normalize(m.encode_text(batch).pooled, dim=-1)
    tau, n = m.cfg.coarse_temperature, 5
    t2v = sum(-float(t[i] @ v[i]) / tau + math.log(sum(math.exp(float(t[i] @ v[j]) / tau) for j in range(n)))
              for i in range(n)) / n
    v2t = sum(-float(v[i] @ t[i]) / tau + math.log(sum(math.exp(float(v[i] @ t[j]) / tau) for j in range(n)))
              for i in range(n)) / n
    assert terms["coarse_t2v"].item() == pytest.approx(0.5 * t2v, rel=1e-10)
    assert terms["coarse_v2t"].item() == pytest.approx(0.5 * v2t, rel=1e-10)
    assert set(terms) == {"coarse_t2v", "coarse_v2t", "fine_c2w", "temporal_c2w", "fine_w2c", "temporal_w2c"}


def test_splice_term_equals_a_direct_computation():
    m = _method("method.splice_weight=0.7", "method.num_clips=3", "data.num_frames=3")
    batch = _batch(4, 3)
    batch["video_mask"][3, 2] = False  # video 3's last clip is padding: items touching it are left out
    with torch.no_grad():
        clips, _ = m.encode_clips(batch)
        calls = int(m.splice_calls)
        terms = m.losses(batch)
    assert int(m.splice_calls) == calls + 1
    k = splice_points(calls, 4, 3)
    assert k.min() >= 1 and k.max() <= 2
    total, count = 0.0, 0
    for i in range(4):
        partner = (i + 1) % 4
        if i == 3 or partner == 3:
            continue
        spliced = torch.cat([clips[i, : k[i]], clips[partner, k[i]:]]).flatten()
        total += F.cross_entropy(m.splice_head(spliced)[None], (k[i] - 1)[None]).item()
        count += 1
    assert terms["splice"].item() == pytest.approx(0.7 * total / count, rel=1e-10)
    assert not torch.equal(splice_points(0, 50, 5), splice_points(1, 50, 5))  # fresh points every call


# ------------------------------------------------------------------------------------------ context head
def test_context_head_identity_at_zero_and_offset_dependence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 32, generator=g, dtype=torch.float64)
    res = _method("method.context_head=residual").context
    assert res.identity_at_zero
    assert torch.equal(res(x, torch.zeros(6, dtype=torch.float64)), x)
    one, two = res(x, torch.ones(6, dtype=torch.float64)), res(x, 2 * torch.ones(6, dtype=torch.float64))
    assert not torch.allclose(one, x) and not torch.allclose(one, two)
    assert not torch.allclose(one, res(x, -torch.ones(6, dtype=torch.float64)))
    add = _method("method.context_head=additive").context
    assert not add.identity_at_zero
    zero = add(x, torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(zero - x, (add.sign_proj.bias + add.dist_proj.bias).expand_as(x))  # official: biases remain
    d = torch.full((6,), 2.0, dtype=torch.float64)
    assert torch.allclose(add(x, d), x + add.sign_proj(torch.ones(6, 1, dtype=torch.float64))
                          + add.dist_proj(2 * torch.ones(6, 1, dtype=torch.float64)))
    assert not torch.allclose(add(x, d), add(x, -d))


# ------------------------------------------------------------------------------------------ positions and data
def test_clip_positions_from_frame_times():
    m = _method("method.num_clips=3", "data.num_frames=6")
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False  # video 1: the last clip is padding
    times = torch.tensor([[0.0, 0.5, 1.0, 1.5, 2.0, 2.5], [0.1, 0.3, 1.4, 1.6, 1.6, 1.6]])
    clip_mask = mask.reshape(2, 3, 2).any(-1)
    pos = m.clip_positions({"frame_times": times, "video_mask": mask}, clip_mask)
    # clip centres 0.25, 1.25, 2.25 (spacing 1) and 0.2, 1.5 (spacing 1.3)
    assert torch.allclose(pos[0], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert torch.allclose(pos[1, :2], torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.equal(m.clip_positions({}, clip_mask), torch.arange(3.0, dtype=torch.float64).expand(2, 3))
    times[0, 2:4] = torch.tensor([0.6, 0.8])  # uneven (rand sampling): centres 0.25, 0.7, 2.25
    pos = m.clip_positions({"frame_times": times, "video_mask": mask}, clip_mask)
    assert pos[0, 1].item() == pytest.approx(0.45 / 1.0)
    sec = _method("method.num_clips=3", "data.num_frames=6", "method.offset_unit=seconds")
    pos = sec.clip_positions({"frame_times": times, "video_mask": mask}, clip_mask)
    assert pos[0].tolist() == pytest.approx([0.25, 0.7, 2.25])
    with pytest.raises(ValueError, match="offset_unit=seconds needs"):
        sec.clip_positions({}, clip_mask)


def test_dataset_items_carry_frame_times_when_the_method_asks(tmp_path):
    from vtp_bench.data.dataset import VideoTextDataset, decode_clip
    from vtp_bench.data.inputs import ItemInputs
    from vtp_bench.data.manifest import read_manifest, resolve_path
    from vtp_bench.data.synthetic import generate_synthetic
    from vtp_bench.data.transforms import VideoTransform
    from vtp_bench.data.video import probe_video

    ds = tmp_path / "synth"
    generate_synthetic(ds, num_videos=10, seed=2, grounding_videos=0, progress=False)
    path = resolve_path(read_manifest(ds / "test.jsonl")[0].path, ds / "test.jsonl")
    info = probe_video(path)
    clip = decode_clip(path, 4, "uniform", VideoTransform(32, train=False), random.Random(0))
    assert torch.allclose(clip.frame_times(), torch.tensor(clip.indices, dtype=torch.float32) / info.fps)
    many = info.num_frames + 3  # more frames than the video has: padded frames repeat the last time
    clip = decode_clip(path, many, "uniform", VideoTransform(32, train=False), random.Random(0))
    t = clip.frame_times()
    assert clip.mask.sum() == info.num_frames and t.shape == (many,)
    assert torch.allclose(t[: info.num_frames], torch.arange(info.num_frames) / info.fps)
    assert torch.all(t[info.num_frames:] == t[info.num_frames - 1])

    cfg = tiny_config("locvtp", f"data.root={tmp_path}")
    inputs = ItemInputs.for_dataset(cfg, "synth")
    assert inputs.names == {"video", "frame_times"}
    item = VideoTextDataset(ds / "train.jsonl", 4, VideoTransform(32, train=True), "rand", inputs=inputs)[0]
    t = item["frame_times"]
    assert t.shape == (4,) and torch.all(t[1:] > t[:-1]) and float(t[-1]) < info.duration
    plain = VideoTextDataset(ds / "train.jsonl", 4, VideoTransform(32, train=True), "rand")[0]
    assert "frame_times" not in plain and torch.equal(plain["video"], item["video"])


# ------------------------------------------------------------------------------------------ encoders, scores
def test_clips_are_encoded_independently():
    m = _method("method.num_clips=2")
    batch = _batch(2, 2)
    with torch.no_grad():
        a = m.encode_video(batch)
        batch["video"][:, 1] += 1.0  # change clip 1 only
        b = m.encode_video(batch)
    assert torch.equal(a.tokens[:, 0], b.tokens[:, 0]) and not torch.allclose(a.tokens[:, 1], b.tokens[:, 1])
    assert torch.allclose(a.pooled, a.tokens.mean(1))
    batch["video_mask"][1, 1] = False  # a padding clip is masked and left out of the mean
    with torch.no_grad():
        c = m.encode_video(batch)
    assert c.mask.tolist() == [[True, True], [True, False]] and torch.allclose(c.pooled[1], c.tokens[1, 0])
    with pytest.raises(ValueError, match="cannot be split into method.num_clips = 3"):
        _method("method.num_clips=3", "data.num_frames=2").encode_video(batch)


def test_clip_word_score_equals_a_loop_across_chunks():
    g = torch.Generator().manual_seed(0)
    nt, nv, c, l, d = 131, 7, 3, 5, 4  # 131 texts cross the 128-row block boundary
    text = Embeddings(pooled=torch.randn(nt, d, generator=g), tokens=torch.randn(nt, l, d, generator=g),
                      mask=torch.rand(nt, l, generator=g) > 0.3)
    text.mask[0] = False  # a caption without words scores 0
    video = Embeddings(pooled=torch.randn(nv, d, generator=g), tokens=torch.randn(nv, c, d, generator=g),
                       mask=torch.tensor([[True, True, False]] * nv))
    got = clip_word_score(text, video)
    tw, vw = F.normalize(text.tokens, dim=-1), F.normalize(video.tokens, dim=-1)
    for i, j in product(range(nt), range(nv)):
        clips = [k for k in range(c) if video.mask[j, k]]
        words = [k for k in range(l) if text.mask[i, k]]
        expected = sum(max(float(vw[j, a] @ tw[i, b]) for b in words) for a in clips) / len(clips) if words else 0.0
        assert got[i, j].item() == pytest.approx(expected, abs=1e-6)
    m = _method("method.retrieval_score=coarse+fine", "method.fine_score_weight=0.5")
    sim = m.similarity(text, video)
    coarse = F.normalize(text.pooled, dim=-1) @ F.normalize(video.pooled, dim=-1).t()
    assert torch.allclose(sim, coarse + 0.5 * got, atol=1e-6)
    assert torch.allclose(_method().similarity(text, video), coarse, atol=1e-6)


def test_clip_word_score_1000_by_1000_is_chunked():
    g = torch.Generator().manual_seed(0)
    text = Embeddings(pooled=torch.randn(1000, 8, generator=g), tokens=torch.randn(1000, 12, 8, generator=g),
                      mask=torch.ones(1000, 12, dtype=torch.bool))
    video = Embeddings(pooled=torch.randn(1000, 8, generator=g), tokens=torch.randn(1000, 5, 8, generator=g),
                       mask=torch.ones(1000, 5, dtype=torch.bool))
    got = clip_word_score(text, video)
    assert got.shape == (1000, 1000)
    w, v = F.normalize(text.tokens[7], dim=-1), F.normalize(video.tokens[999], dim=-1)
    assert got[7, 999].item() == pytest.approx((v @ w.t()).max(-1).values.mean().item(), abs=1e-6)


# ------------------------------------------------------------------------------------------ configs, sizes
def test_configs_load_and_bad_values_are_refused():
    for name in ("locvtp_synth", "locvtp_webvid"):
        cfg = load_config(name)
        assert cfg.method.name == "locvtp"
        assert cfg.data.num_frames % cfg.method.num_clips == 0
        assert cfg.data.num_frames // cfg.method.num_clips <= cfg.method.video.num_frames
    with pytest.raises(ConfigError, match="method.negatives"):
        load_config("locvtp_synth", ["method.negatives=everything"])
    with pytest.raises(ConfigError, match="method.context_head"):
        load_config("locvtp_synth", ["method.context_head=mlp"])


def test_paper_size_parameter_count_on_meta():
    with torch.device("meta"):
        m = LocVTP(LocVTPConfig())
    n = sum(p.numel() for p in m.parameters())
    vit_b16_4f, distilbert = 114_168_576, 66_362_880  # tests/test_params.py
    proj = (768 * 256 + 256) + (256 * 256 + 256) + 2 * 256  # Linear, Linear, LayerNorm
    context = (257 * 256 + 256) + 256 * 256  # the output bias would cancel: there is none
    assert n == vit_b16_4f + distilbert + 2 * proj + context == 181_189_376


# ------------------------------------------------------------------------------------------ distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OVERRIDES = ("method.negatives=both", "method.splice_weight=1.0", "method.num_clips=3", "data.num_frames=3",
             "method.top_k_words=2")


def _grads(m):
    return {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, out: str, split: tuple[int, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    m = _method(*OVERRIDES)
    batch = _batch(sum(split), 3)
    a = sum(split[:rank])
    local = {k: v[a : a + split[rank]] for k, v in batch.items()}
    sum(m.losses(local).values()).backward()
    grads = _grads(m)
    for g in grads.values():
        dist.all_reduce(g)
        g /= world
    if rank == 0:
        torch.save(grads, out)
    dist.destroy_process_group()


def test_batch_negatives_and_splice_give_the_global_batch_gradient(tmp_path):
    """Cross-caption negatives and the splice partner cross ranks: 2 processes on (5, 3) rows == 1 on 8."""
    m = _method(*OVERRIDES)
    sum(m.losses(_batch(8, 3)).values()).backward()
    reference = _grads(m)
    out = tmp_path / "g.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out), (5, 3)), nprocs=2, join=True)
    got = torch.load(out)
    assert got.keys() == reference.keys() and "splice_head.weight" in got
    for k, ref in reference.items():
        assert torch.allclose(got[k], ref, rtol=1e-6, atol=1e-9), k


# ---------------------------------------------------------------- the official variants (docs/methods/locvtp.md)
def test_official_offset_sign_is_the_default_with_the_sign_layer_negated():
    """context_minus_reference (official) with an additive head equals reference_minus_context with the head's
    sign embedding negated: the only place the sign enters."""
    common = ["method.context_head=additive", "method.num_clips=3", "data.num_frames=3"]
    official = _method("method.offset_sign=context_minus_reference", *common)
    ours = _method(*common)
    ours.load_state_dict(official.state_dict())
    with torch.no_grad():
        ours.context.sign_proj.weight.neg_()
    clips, clip_mask, words, attn, pos = _crafted()
    with torch.no_grad():
        a = official._fine_and_temporal(clips, clip_mask, words, word_mask(attn), pos)
        b = ours._fine_and_temporal(clips, clip_mask, words, word_mask(attn), pos)
        ours.load_state_dict(official.state_dict())
        c = ours._fine_and_temporal(clips, clip_mask, words, word_mask(attn), pos)
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-12), k
    assert a["temporal_c2w"].item() != pytest.approx(c["temporal_c2w"].item(), rel=1e-6)


def test_official_coarse_mean_halves_the_coarse_terms():
    batch = _batch(5, 2)
    summed, mean = _method(), _method("method.coarse_directions=mean")
    mean.load_state_dict(summed.state_dict())
    with torch.no_grad():
        s, m = summed.losses(batch), mean.losses(batch)
    for k in ("coarse_t2v", "coarse_v2t"):
        assert m[k].item() == pytest.approx(0.5 * s[k].item(), rel=1e-12)
    assert m["fine_c2w"].item() == pytest.approx(s["fine_c2w"].item(), rel=1e-12)


def test_separate_offset_heads_warp_the_word_to_clip_positives_on_their_own():
    common = ["method.num_clips=3", "data.num_frames=3"]
    sep, shared = _method("method.offset_heads=separate", *common), _method(*common)
    assert any(k.startswith("context_w2c.") for k in sep.state_dict())
    shared.load_state_dict({k: v for k, v in sep.state_dict().items() if not k.startswith("context_w2c.")})
    clips, clip_mask, words, attn, pos = _crafted()
    with torch.no_grad():
        sep.context_w2c.load_state_dict(sep.context.state_dict())  # the same weights: the shared model's terms
        a = sep._fine_and_temporal(clips, clip_mask, words, word_mask(attn), pos)
        b = shared._fine_and_temporal(clips, clip_mask, words, word_mask(attn), pos)
        for p in sep.context_w2c.parameters():
            p.add_(0.3 * torch.randn_like(p))
        c = sep._fine_and_temporal(clips, clip_mask, words, word_mask(attn), pos)
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-12), k
    assert c["temporal_c2w"].item() == pytest.approx(a["temporal_c2w"].item(), rel=1e-12)  # the clip-side head
    assert c["temporal_w2c"].item() != pytest.approx(a["temporal_w2c"].item(), rel=1e-6)
