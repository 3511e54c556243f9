"""RegionLearner: the head against a direct element-by-element computation of the official forward, the EMA
codebook against a hand computation (also across two gloo processes), paper-size keys and counts, released
checkpoints in the official layout, the loss against a per-pair loop, the region drawing."""

from __future__ import annotations

import itertools
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from conftest import tiny_config
from helpers.official import TEXT_CFG, VIDEO, official_frozen_state, our_frozen, reference_forward
from vtp_bench.config import ConfigError, load_config
from vtp_bench.lit import build_method
from vtp_bench.methods.regionlearner import RegionLearner, RegionLearnerConfig, RegionLearnerHead
from vtp_bench.models.checkpoints import CheckpointError, load_official
from vtp_bench.models.params import count_parameters

torch.set_default_dtype(torch.float32)


# ------------------------------------------------------------------------------------- direct reference
def _conv3x3(x, weight, bias):
    """x [C, h, w], weight [S, C, 3, 3] -> [S, h, w], zero padding 1, one output element at a time."""
    c, h, w = x.shape
    out = torch.empty(weight.shape[0], h, w, dtype=x.dtype)
    for s, i, j in itertools.product(range(weight.shape[0]), range(h), range(w)):
        acc = bias[s].clone()
        for di, dj in itertools.product((-1, 0, 1), repeat=2):
            if 0 <= i + di < h and 0 <= j + dj < w:
                acc = acc + (weight[s, :, di + 1, dj + 1] * x[:, i + di, j + dj]).sum()
        out[s, i, j] = acc
    return out


def _attention(x, qkv_w, proj_w, proj_b, heads):
    """x [n, C] one video's region tokens; per head softmax(q k^T / sqrt(d)) v, then proj (no residual)."""
    n, c = x.shape
    d = c // heads
    q, k, v = (x @ qkv_w.T).split(c, dim=1)
    outs = []
    for hh in range(heads):
        sl = slice(hh * d, (hh + 1) * d)
        att = torch.softmax(q[:, sl] @ k[:, sl].T * d ** -0.5, dim=-1)
        outs.append(att @ v[:, sl])
    return torch.cat(outs, dim=1) @ proj_w.T + proj_b


def reference_head(tokens, frames, p, heads, embed=None, motion=False):
    """Official RegionLearner.forward in eval mode, from the parameter dict ``p`` (official key names): nearest
    code by explicit squared distances (first index on ties), masks by an explicit 3x3 conv, regions as the
    mean over positions of mask * feature, attention per video. Returns regions [N, S, C], codes, masks."""
    n, length, c = tokens.shape
    h = w = math.isqrt(length)
    e = p["Quantization.embed"] if embed is None else embed
    codes = torch.tensor([min(range(e.shape[0]), key=lambda k: float(((z - e[k]) ** 2).sum()))
                          for z in tokens.detach().reshape(-1, c)])
    q = e[codes].reshape(n, length, c)
    if motion and frames > 1:
        x = tokens.reshape(-1, frames, length, c)
        add = torch.empty_like(x)
        for b in range(x.shape[0]):
            for t in range(frames):
                diff = x[b, t] - x[b, t - 1] if t > 0 else torch.zeros_like(x[b, t])
                grid = diff.T.reshape(c, h, w)
                m = _conv3x3(grid, p["Motion_Excitation.ex_proj.weight"], p["Motion_Excitation.ex_proj.bias"])
                add[b, t] = x[b, t] * torch.softmax(m.reshape(-1), 0)[:, None]
        q = q + add.reshape(n, length, c)
    masks, regions = [], []
    for i in range(n):
        grid = q[i].T.reshape(c, h, w)  # patch order is row-major over the grid
        m = _conv3x3(grid, p["Aggregation.spatial_att.weight"], p["Aggregation.spatial_att.bias"])
        masks.append(m)
        regions.append(torch.stack([(m[s][None] * grid).mean(dim=(1, 2)) for s in range(m.shape[0])]))
    masks, regions = torch.stack(masks), torch.stack(regions)
    s = regions.shape[1]
    if "Interaction.qkv.weight" in p:
        per_video = regions.reshape(-1, frames * s, c)
        regions = torch.stack([_attention(r, p["Interaction.qkv.weight"], p["Interaction.proj.weight"],
                                          p["Interaction.proj.bias"], heads) for r in per_video]).reshape(n, s, c)
    return regions, codes.reshape(n, h, w), masks


def _head(seed=0, motion=False, **kw):
    torch.manual_seed(seed)
    head = RegionLearnerHead(num_codes=kw.pop("num_codes", 12), dim=16, num_regions=3, motion_excitation=motion,
                             num_heads=4, **kw).double()
    with torch.no_grad():
        for prm in head.parameters():
            prm.copy_(0.3 * torch.randn_like(prm))
    return head


@pytest.mark.parametrize("motion", [False, True], ids=["plain", "motion_excitation"])
def test_head_equals_direct_official_computation(motion):
    head = _head(motion=motion).eval()
    frames = 2
    tokens = torch.randn(2 * frames, 9, 16, dtype=torch.float64)  # 2 videos x 2 frames, 3 x 3 patches
    regions, codes, masks = head(tokens, frames)
    ref_regions, ref_codes, ref_masks = reference_head(tokens, frames, head.state_dict(), heads=4, motion=motion)
    assert regions.shape == (4, 3, 16) and codes.shape == (4, 3, 3) and masks.shape == (4, 3, 3, 3)
    assert torch.equal(codes, ref_codes)
    torch.testing.assert_close(masks, ref_masks, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(regions, ref_regions, rtol=1e-10, atol=1e-12)
    assert (masks < 0).any()  # raw conv outputs: no softmax / sigmoid


def test_ties_take_the_first_code_and_gradient_is_straight_through():
    head = _head(num_codes=4).eval()
    e = head.Quantization.embed
    e[2] = e[1]  # codes 1 and 2 identical: a token there must get code 1
    z = e[1:2].clone().expand(4, 16).contiguous().requires_grad_(True)
    q, idx, counts = head.Quantization(z)
    assert idx.tolist() == [1, 1, 1, 1] and counts.tolist() == [0, 4, 0, 0]
    w = torch.randn(4, 16, dtype=torch.float64)
    (q * w).sum().backward()
    assert torch.equal(z.grad, w)  # d q / d z = identity


def test_ema_update_equals_hand_computation():
    """K = 3 codes in 2-d, decay 0.1, eps 1e-5, written out by hand (Quantizer.py, specs §1.4 step 3)."""
    head = RegionLearnerHead(num_codes=3, dim=2, num_regions=1, depth=0).double().train()
    vq = head.Quantization
    vq.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    z = torch.tensor([[1.0, 1.0], [9.0, 1.0], [11.0, -1.0], [0.5, 0.0]], dtype=torch.float64)
    q, idx, counts = vq(z)
    assert idx.tolist() == [0, 1, 1, 0]  # argmin with the codebook *before* the update
    assert counts.tolist() == [2, 2, 0]
    g, eps = 0.1, 1e-5
    size = [0.9 * 2, 0.9 * 2, 0.0]  # g * 0 + (1 - g) * n
    avg = [[0.9 * 1.5, 0.9 * 1.0], [0.9 * 20.0, 0.9 * 0.0], [0.0, 0.0]]
    total = sum(size)
    smooth = [(s + eps) / (total + 3 * eps) * total for s in size]
    embed = torch.tensor([[a / smooth[k] for a in avg[k]] for k in range(3)], dtype=torch.float64)
    torch.testing.assert_close(vq.cluster_size, torch.tensor(size, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(vq.embed_avg, torch.tensor(avg, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(vq.embed, embed, rtol=1e-15, atol=1e-15)
    assert vq.cluster_sum.tolist() == [2, 2, 0]
    assert not vq.embed[2].any()  # a code unused in the first update collapses to the zero vector (official)
    # the returned codes are looked up in the codebook *after* the update (then straight through)
    torch.testing.assert_close(q, embed[[0, 1, 1, 0]], rtol=0, atol=1e-14)
    # second step: decay applies to the history
    # z2 = (0, 9): code 0 is now about (0.75, 0.5) (distance^2 72.8), code 2 the origin (81): code 0
    z2 = torch.tensor([[0.0, 9.0]], dtype=torch.float64)
    _, idx2, _ = vq(z2)
    assert idx2.tolist() == [0] and vq.cluster_sum.tolist() == [3, 2, 0]
    size2 = [g * size[0] + (1 - g) * 1, g * size[1], 0.0]
    avg2 = [[g * avg[0][0] + (1 - g) * 0.0, g * avg[0][1] + (1 - g) * 9.0], [g * avg[1][0], g * avg[1][1]], [0, 0]]
    total2 = sum(size2)
    smooth2 = [(s + eps) / (total2 + 3 * eps) * total2 for s in size2]
    embed2 = torch.tensor([[a / smooth2[k] for a in avg2[k]] for k in range(3)], dtype=torch.float64)
    torch.testing.assert_close(vq.cluster_size, torch.tensor(size2, dtype=torch.float64), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(vq.embed, embed2, rtol=1e-14, atol=1e-14)


def test_eval_mode_leaves_the_codebook_alone():
    head = _head().eval()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    head(torch.randn(2, 4, 16, dtype=torch.float64), 1)
    assert all(torch.equal(v, before[k]) for k, v in head.state_dict().items())


def test_decay_ramp_is_an_option_and_constant_by_default():
    cfg = tiny_config("regionlearner")
    m = build_method(cfg)
    m.on_train_batch_end(50)
    assert m.region_learner.Quantization.curr_decay == 0.1  # the official run: never ramps
    cfg = tiny_config("regionlearner", "method.ema_schedule=ramp")
    m = build_method(cfg)
    m.on_train_batch_end(3)
    assert m.region_learner.Quantization.curr_decay == pytest.approx(0.4)
    m.on_train_batch_end(500)
    assert m.region_learner.Quantization.curr_decay == 0.99
    with pytest.raises(ConfigError, match="method.ema_schedule"):
        tiny_config("regionlearner", "method.ema_schedule=linear")
    with pytest.raises(ConfigError, match="method.pool"):
        tiny_config("regionlearner", "method.pool=mean")


def test_codebook_stats_perplexity_live_and_dead():
    head = RegionLearnerHead(num_codes=4, dim=2, num_regions=1, depth=0).double().train()
    head.Quantization.embed.copy_(torch.tensor([[0.0, 0], [5, 0], [0, 5], [5, 5]]))
    head(torch.tensor([[[0.1, 0], [4.9, 0], [0, 4.9], [5, 4.8]]], dtype=torch.float64), 1)  # 1 frame, 2 x 2
    stats = head.codebook_stats()
    assert stats["rl_perplexity"] == pytest.approx(4.0) and stats["rl_live_codes"] == 4
    assert stats["rl_dead_codes"] == 0
    head(torch.tensor([[[0.1, 0], [0.1, 0], [0.0, 0.1], [0.2, 0.0]]], dtype=torch.float64), 1)
    stats = head.codebook_stats()
    assert stats["rl_perplexity"] == pytest.approx(1.0) and stats["rl_live_codes"] == 1
    assert stats["rl_dead_codes"] == 0  # 0.1 * 0.9 = 0.09 tokens: not yet dead
    for _ in range(2):
        head(torch.tensor([[[0.1, 0], [0.1, 0], [0.0, 0.1], [0.2, 0.0]]], dtype=torch.float64), 1)
    assert head.codebook_stats()["rl_dead_codes"] == 3  # 0.9e-3 < 1e-3


# -------------------------------------------------------------------------------- EMA across two ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ema_tokens():
    g = torch.Generator().manual_seed(3)
    return torch.randn(7, 9, 16, generator=g, dtype=torch.float64)  # 7 frames of 3 x 3 patches


def _ema_worker(rank: int, world: int, port: int, out: str, split: tuple[int, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    head = _head().train()
    tokens = _ema_tokens()
    start = sum(split[:rank])
    for _ in range(2):  # two steps: the second step's argmin uses the first step's (all-reduced) codebook
        _, codes, _ = head(tokens[start:start + split[rank]], 1)
    torch.save({"buffers": {k: v for k, v in head.state_dict().items() if k.startswith("Quantization.")},
                "codes": codes, "counts": head.last_counts}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_ema_update_across_two_processes_equals_one_process(tmp_path):
    head = _head().train()
    tokens = _ema_tokens()
    for _ in range(2):
        _, codes, _ = head(tokens, 1)
    ref = {k: v for k, v in head.state_dict().items() if k.startswith("Quantization.")}
    out = str(tmp_path / "ema")
    split = (4, 3)  # uneven: the all-reduce sums counts and sums, not averages
    mp.spawn(_ema_worker, args=(2, _free_port(), out, split), nprocs=2, join=True)
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    for k in ref:
        assert torch.equal(r0["buffers"][k], r1["buffers"][k]), k  # identical codebook on both ranks
        torch.testing.assert_close(r0["buffers"][k], ref[k], rtol=1e-12, atol=1e-12)
    assert torch.equal(torch.cat([r0["codes"], r1["codes"]]), codes)
    assert torch.equal(r0["counts"], head.last_counts) and torch.equal(r1["counts"], head.last_counts)
    assert torch.equal(r0["buffers"]["Quantization.cluster_sum"], ref["Quantization.cluster_sum"])


# ------------------------------------------------------------------------------------- the method
def _tiny_batch(cfg, n=4, dtype=torch.float32):
    d = cfg.data
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randn(n, d.num_frames, 3, d.img_size, d.img_size, generator=g, dtype=dtype),
            "text": ["a red circle moves left", "a blue square", "green triangle grows", "two small shapes"][:n]}


def test_tiny_forward_backward_finite_and_every_parameter_gets_a_gradient():
    cfg = tiny_config("regionlearner")
    torch.manual_seed(0)
    m = build_method(cfg).train()
    terms = m.losses(_tiny_batch(cfg))
    loss = sum(terms.values())
    assert set(terms) == {"nce_t2v", "nce_v2t"} and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing
    stats = m.train_stats()
    assert set(stats) == {"rl_perplexity", "rl_live_codes", "rl_dead_codes"} and stats["rl_live_codes"] >= 1


def test_embedding_is_cls_plus_mean_of_normed_regions_and_cls_pool_ignores_them():
    cfg = tiny_config("regionlearner")
    torch.manual_seed(0)
    m = build_method(cfg).double().eval()
    batch = _tiny_batch(cfg, dtype=torch.float64)
    vm = m.video_model
    out = vm(batch["video"])
    ln = lambda x: torch.nn.functional.layer_norm(x, x.shape[-1:], vm.norm.weight, vm.norm.bias, 1e-6)  # noqa
    torch.testing.assert_close(ln(out.hidden), out.tokens)  # hidden = the tokens before the final norm
    b, t = batch["video"].shape[:2]
    patches = out.hidden[:, 1:].reshape(b * t, -1, out.hidden.shape[-1])
    regions, _, _ = reference_head(patches, t, m.region_learner.state_dict(), heads=4)
    feature = ln(out.hidden[:, 0]) + ln(regions.reshape(b, -1, regions.shape[-1])).mean(dim=1)
    expected = feature @ m.vid_proj[0].weight.T + m.vid_proj[0].bias
    torch.testing.assert_close(m.encode_video(batch).pooled, expected)
    cls_cfg = tiny_config("regionlearner", "method.pool=cls")
    torch.manual_seed(0)
    c = build_method(cls_cfg).double().eval()
    assert not any(p.requires_grad for p in c.region_learner.parameters())
    torch.testing.assert_close(c.encode_video(batch).pooled, c.vid_proj(c.video_model(batch["video"]).pooled))


def test_similarity_and_loss_equal_a_per_pair_loop():
    cfg = tiny_config("regionlearner")
    torch.manual_seed(0)
    m = build_method(cfg).double().eval()
    batch = _tiny_batch(cfg, dtype=torch.float64)
    with torch.no_grad():
        v, t = m.encode_video(batch), m.encode_text(batch)
        sim = m.similarity(t, v)
    n = len(batch["text"])
    direct = torch.tensor([[float(t.pooled[i] @ v.pooled[j] / (t.pooled[i].norm() * v.pooled[j].norm()))
                            for j in range(n)] for i in range(n)], dtype=torch.float64)
    torch.testing.assert_close(sim.double(), direct, rtol=1e-6, atol=1e-6)  # scored in fp32 (base.Method)
    terms = m.losses(batch)
    tau = 0.05
    t2v = -sum(math.log(math.exp(direct[i, i] / tau) / sum(math.exp(direct[i, j] / tau) for j in range(n)))
               for i in range(n)) / n
    v2t = -sum(math.log(math.exp(direct[j, j] / tau) / sum(math.exp(direct[i, j] / tau) for i in range(n)))
               for j in range(n)) / n
    assert terms["nce_t2v"].item() == pytest.approx(t2v, rel=1e-9)
    assert terms["nce_v2t"].item() == pytest.approx(v2t, rel=1e-9)


# ------------------------------------------------------------------------------------- paper size
HEAD_KEYS = {"Quantization.embed": (2048, 768), "Quantization.cluster_size": (2048,),
             "Quantization.cluster_sum": (2048,), "Quantization.embed_avg": (2048, 768),
             "Aggregation.spatial_att.weight": (8, 768, 3, 3), "Aggregation.spatial_att.bias": (8,),
             "Interaction.qkv.weight": (2304, 768), "Interaction.proj.weight": (768, 768),
             "Interaction.proj.bias": (768,)}


def test_paper_size_keys_shapes_and_parameter_counts():
    with torch.device("meta"):
        head = RegionLearnerHead(2048, 768, 8)
        method = RegionLearner(OmegaConf.structured(RegionLearnerConfig()))
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == HEAD_KEYS
    assert count_parameters(head) == 2_415_368  # specs/regionlearner.md §1.7 (ran the official module)
    assert {k for k, _ in head.named_parameters()} == {k for k in HEAD_KEYS if not k.startswith("Quantization")}
    # FiT's ViT-B/16 (4 frames) + DistilBERT-base + vid_proj/txt_proj 768 -> 256 + the head
    assert count_parameters(method) == 114_168_576 + 66_362_880 + 2 * (768 * 256 + 256) + 2_415_368
    assert {k for k in method.state_dict() if k.startswith("region_learner.")} == {f"region_learner.{k}"
                                                                                   for k in HEAD_KEYS}
    with torch.device("meta"):
        me = RegionLearnerHead(2048, 768, 8, motion_excitation=True)
    assert count_parameters(me) - 2_415_368 == 768 * 9 + 1  # Motion_Excitation.ex_proj: Conv2d(768, 1, 3)


def test_paper_experiments_load():
    for name, frames, lr in (("regionlearner_webvid", 1, 2e-4), ("regionlearner_msrvtt", 8, 3e-5),
                             ("regionlearner_didemo", 8, 3e-5), ("regionlearner_msvd", 8, 3e-5),
                             ("regionlearner_lsmdc", 8, 3e-5)):
        cfg = load_config(name)
        assert cfg.method.name == "regionlearner" and cfg.method.num_codes == 2048 and cfg.method.num_regions == 8
        assert cfg.data.num_frames == frames and cfg.optim.lr == lr and cfg.method.temperature == 0.05
        assert cfg.method.ema_decay == 0.1 and cfg.method.pool == "cls+regions"


# ------------------------------------------------------------------------------- released checkpoints
def _rl_official_state(seed=0):
    sd, video, bert = official_frozen_state(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    shapes = {"Quantization.embed": (16, 48), "Quantization.cluster_size": (16,), "Quantization.cluster_sum": (16,),
              "Quantization.embed_avg": (16, 48), "Aggregation.spatial_att.weight": (3, 48, 3, 3),
              "Aggregation.spatial_att.bias": (3,), "Interaction.qkv.weight": (144, 48),
              "Interaction.proj.weight": (48, 48), "Interaction.proj.bias": (48,)}
    head = {k: 0.3 * torch.randn(s, generator=g) for k, s in shapes.items()}
    sd.update({f"module.video_model.RegionLearner.{k}": v for k, v in head.items()})
    return sd, video, head


def _our_rl(**kw):
    cfg = OmegaConf.structured(RegionLearnerConfig(
        video={"name": "space_time_vit", **VIDEO, "num_frames": 4}, text={"name": "hf_text", "config": TEXT_CFG},
        embed_dim=24, num_codes=16, num_regions=3, **kw))
    return RegionLearner(cfg).eval()


def test_released_regionlearner_file_loads_strictly_and_reproduces_the_official_embedding():
    sd, video_sd, head_sd = _rl_official_state()
    method = _our_rl()
    report = load_official(method, {"state_dict": sd, "epoch": 3})  # strict by default
    assert report.source == "frozen" and report.ignored == [] and report.untouched == []
    for k, v in head_sd.items():
        assert torch.equal(method.region_learner.state_dict()[k], v), k
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = method.video_model(clip)
        # our pre-norm tokens, checked against the explicit reference of the official tower
        ref_tokens = reference_forward(video_sd, clip, heads=4, patch=8, depth=2)
        ln = lambda x: torch.nn.functional.layer_norm(  # noqa: E731
            x, x.shape[-1:], video_sd["norm.weight"], video_sd["norm.bias"], 1e-6)
        torch.testing.assert_close(ln(out.hidden), ref_tokens, atol=1e-5, rtol=1e-5)
        regions, _, _ = reference_head(out.hidden[:, 1:].reshape(8, 16, 48), 4, head_sd, heads=8)
        feature = ref_tokens[:, 0] + ln(regions.reshape(2, 12, 48)).mean(dim=1)
        expected = feature @ sd["module.vid_proj.0.weight"].T + sd["module.vid_proj.0.bias"]
        torch.testing.assert_close(method.encode_video({"video": clip}).pooled, expected, atol=1e-5, rtol=1e-5)


def test_checkpoint_layouts_that_do_not_fit_are_named():
    sd, _, _ = _rl_official_state(seed=1)
    with pytest.raises(CheckpointError, match="Motion_Excitation"):  # our head has a part the file lacks
        load_official(_our_rl(motion_excitation=True), sd)
    with pytest.raises(CheckpointError, match="Interaction.0.qkv"):  # depth 2: Interaction.{0,1}.*
        load_official(_our_rl(interaction_depth=2), sd)
    frozen_only = {k: v for k, v in sd.items() if "RegionLearner" not in k}
    report = load_official(_our_rl(), frozen_only)  # a Frozen file: the head stays as built, and is reported
    assert sorted(report.untouched) == sorted(f"region_learner.{k}" for k in HEAD_KEYS)
    with pytest.raises(CheckpointError, match="--ckpt-non-strict"):  # the Frozen method has no head
        load_official(our_frozen(), sd)


# ------------------------------------------------------------------------------------- drawing
def test_viz_regions_draws_a_png_from_a_trained_checkpoint(tmp_path):
    from conftest import tiny_overrides
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "data" / "synth", num_videos=8, seed=0, grounding_videos=0, progress=False)
    runs = tmp_path / "runs"
    assert main(["train", "regionlearner_synth", *tiny_overrides("regionlearner"), "trainer.max_steps=1",
                 f"data.root={tmp_path / 'data'}", f"run.dir={runs}", "run.version=v"]) == 0
    ckpt = runs / "regionlearner_synth" / "v" / "checkpoints" / "last.ckpt"
    video = next((tmp_path / "data" / "synth" / "videos").glob("*.mp4"))
    out = tmp_path / "regions.png"
    assert main(["viz", "regions", "--ckpt", str(ckpt), "--video", str(video), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    from vtp_bench.evaluate import module_from_checkpoint
    from vtp_bench.viz import region_maps

    maps = region_maps(module_from_checkpoint(ckpt), video)
    assert maps["masks"].shape == (4, 2, 2, 2) and maps["codes"].shape == (4, 2, 2)
    assert maps["frames"].shape == (4, 32, 32, 3) and 0 <= maps["frames"].min() <= maps["frames"].max() <= 1
    assert main(["viz", "regions", "--ckpt", str(ckpt), "--video", str(tmp_path / "nope.mp4"), "--out",
                 str(out)]) == 2


def test_viz_code_panel_has_a_legend(tmp_path, monkeypatch):
    """The code-index column says which colour is which codebook entry: the most frequent codes are named, the rest
    counted as one grey; a colour is never shared by two named codes."""
    import matplotlib.pyplot as plt
    import numpy as np

    from vtp_bench.viz import draw_regions

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 300, (3, 7, 7))
    codes[:, :2] = 5  # the most frequent code
    maps = {"frames": rng.random((3, 28, 28, 3)), "codes": codes, "masks": rng.standard_normal((3, 2, 7, 7))}
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    out = draw_regions(maps, tmp_path / "regions.png", title="clip.mp4")
    assert out.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1 and legends[0].get_title().get_text().startswith("code index")
    labels = [t.get_text() for t in legends[0].get_texts()]
    assert labels[0] == "code 5" and labels[-1] == f"{len(np.unique(codes)) - (len(labels) - 1)} other codes"
    colours = [tuple(h.get_facecolor()) for h in legends[0].legend_handles]
    assert len(set(colours)) == len(colours)
