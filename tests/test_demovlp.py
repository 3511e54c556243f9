"""DemoVLP: the region-word alignment score and RWA loss against the official code's outputs and a direct
per-pair loop, the retrieval score's orientation, the losses, RoI pooling, paper-size parameter counts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import fake_method_inputs, tiny_config
from vtp_bench.lit import build_method
from vtp_bench.methods.base import Embeddings
from vtp_bench.methods.demovlp import DemoVLP, region_word_scores, roi_pool, rwa_loss

# ---- official outputs: showlab/DemoVLP fc5a31d model/loss.py, run in float64 on the inputs of _official_inputs()
# (xattn_score_fast(v, w, (vm - 1) * 100, None, (wm - 1) * 100, focal_type, lambda_softmax=20), [video, text])
OFFICIAL_EQUAL = [
    [1.3797255791812146, 0.5034845776399546, 1.1333448000401756, 1.290290293990246],
    [0.8861839035703278, 0.7538257997706386, 1.165075334069126, 0.7900040213750135],
    [0.9086984000157944, 1.166669281617697, 0.9686645417631649, 1.0479515462705984],
    [0.8502331212270762, -0.8988498859546453, 0.6964246115119314, 0.7470839339004601],
]
OFFICIAL_PROB = [  # focal_type="prob": the official code's else-branch, no focal re-weighting ("none" here)
    [1.3111647080119178, 0.44549801735298833, 1.0384564861757433, 1.2923133850881166],
    [0.884343643587077, 0.744190180664325, 1.1580936305127403, 0.7719177497460323],
    [0.8836354616987462, 1.1221903957310964, 0.8897837225674137, 0.9596715092999728],
    [0.8502331284933493, -0.8988498859546453, 0.6964246113737816, 0.7470839171797963],
]
OFFICIAL_RWA = 10.094421345709435  # RWALoss(20, "equal")(v, w, vmask, None, wmask)
# GlobalLocalLoss(0.05, 20, "equal")(sim, v, w, vmask, None, wmask): total, global, local; sim = the cosines of
# the globals of test_losses_equal_the_official_global_local_loss
OFFICIAL_GLOBAL_LOCAL = (31.79447980245523, 21.700058456745793, 10.094421345709435)


def _official_inputs(dtype=torch.float64):
    """4 videos x 6 regions (edge-padded after 6, 4, 5, 1 real ones), 4 texts x 5 words (5, 2, 3, 4 real), D = 8."""
    b, n, l, d = 4, 6, 5, 8
    v = torch.sin(torch.arange(b * n * d, dtype=torch.float64).reshape(b, n, d) * 0.731 + 0.3)
    w = torch.cos(torch.arange(b * l * d, dtype=torch.float64).reshape(b, l, d) * 0.517 - 0.2)
    vm, wm = torch.zeros(b, n, dtype=torch.bool), torch.zeros(b, l, dtype=torch.bool)
    for i, (nv, nw) in enumerate(zip([6, 4, 5, 1], [5, 2, 3, 4])):
        vm[i, :nv] = True
        v[i, nv:] = v[i, nv - 1]
        wm[i, :nw] = True
    return v.to(dtype), vm, w.to(dtype), wm


def test_scores_equal_the_official_outputs():
    v, vm, w, wm = _official_inputs()
    for focal, ref in (("equal", OFFICIAL_EQUAL), ("none", OFFICIAL_PROB)):
        ref = torch.tensor(ref, dtype=torch.float64)
        assert torch.allclose(region_word_scores(v, vm, w, wm, 20.0, focal), ref, rtol=0, atol=1e-10), focal
        v32, w32 = v.float(), w.float()  # fp32, as training runs: to 1e-5
        assert torch.allclose(region_word_scores(v32, vm, w32, wm, 20.0, focal).double(), ref, rtol=0, atol=1e-5)
    assert abs(rwa_loss(region_word_scores(v, vm, w, wm)).item() - OFFICIAL_RWA) < 1e-10


def _leaky(x: float) -> float:
    return x if x > 0 else 0.1 * x


def _direction(queries, q_valid, context, c_valid, lam, focal):
    """One direction for one pair, token by token (spec §2.3, official padding): mean over every query slot of
    cos(query, focal-reweighted softmax attention over the context)."""
    eps = 1e-8
    qn = [q / (q.norm() + eps) for q in queries]
    cn = [c / (c.norm() + eps) for c in context]
    raw = [[_leaky(float(qn[t] @ cn[r])) for r in range(len(cn))] for t in range(len(qn))]
    # L2 over the queries, for each context slot
    col = [math.sqrt(sum(raw[t][r] ** 2 for t in range(len(qn)))) + eps for r in range(len(cn))]
    total = 0.0
    for t in range(len(qn)):
        logits = [lam * (raw[t][r] / col[r] + (0.0 if q_valid[t] else -100.0) + (0.0 if c_valid[r] else -100.0))
                  for r in range(len(cn))]
        m = max(logits)
        e = [math.exp(x - m) for x in logits]
        a = [x / sum(e) for x in e]
        if focal == "equal":
            h = [1.0 if x * len(a) - sum(a) > 0 else 0.0 for x in a]
            a = [x * y / sum(p * q for p, q in zip(a, h)) for x, y in zip(a, h)]
        ctx = sum(a[r] * cn[r] for r in range(len(cn)))
        total += float(queries[t] @ ctx) / max(float(queries[t].norm() * ctx.norm()), eps)
    return total / len(qn)


def _pair_loop(v, vm, w, wm, lam=20.0, focal="equal"):
    out = torch.zeros(v.shape[0], w.shape[0], dtype=torch.float64)
    for i in range(v.shape[0]):
        for j in range(w.shape[0]):
            out[i, j] = (_direction(w[j], wm[j], v[i], vm[i], lam, focal)  # words attend to regions
                         + _direction(v[i], vm[i], w[j], wm[j], lam, focal))  # regions attend to words
    return out


@pytest.mark.parametrize("focal", ["equal", "none"])
def test_scores_equal_a_direct_per_pair_loop(focal):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    w = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    vm, wm = torch.rand(3, 7, generator=g) > 0.3, torch.rand(4, 6, generator=g) > 0.3
    vm[:, 0] = wm[:, 0] = True
    ref = _pair_loop(v, vm, w, wm, 7.0, focal)
    assert torch.allclose(region_word_scores(v, vm, w, wm, 7.0, focal), ref, atol=1e-10)
    # padding="masked": each pair scores as if the padded slots were not there at all
    masked = region_word_scores(v, vm, w, wm, 7.0, focal, padding="masked", chunk=2)
    for i in range(3):
        for j in range(4):
            vi, wj = v[i][vm[i]], w[j][wm[j]]
            alone = _pair_loop(vi[None], torch.ones(1, len(vi), dtype=torch.bool), wj[None],
                               torch.ones(1, len(wj), dtype=torch.bool), 7.0, focal)
            assert abs(masked[i, j].item() - alone.item()) < 1e-10
    assert not torch.allclose(masked, ref)  # the two semantics differ on padded inputs


@pytest.mark.parametrize("padding", ["official", "masked"])
def test_score_gradients_equal_finite_differences(padding):
    """The in-place steps of the blocked score keep autograd right (the loss backpropagates through it)."""
    g = torch.Generator().manual_seed(3)
    v = torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    vm, wm = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool(), torch.tensor([[1, 1, 0, 0]] * 3).bool()
    assert torch.autograd.gradcheck(lambda a, b: region_word_scores(a, vm, b, wm, 5.0, padding=padding, chunk=2),
                                    (v, w), eps=1e-6, atol=1e-6)


def test_chunks_do_not_change_scores_and_bad_input_is_named():
    v, vm, w, wm = _official_inputs()
    full = region_word_scores(v, vm, w, wm, chunk=64)
    for chunk in (1, 3):
        assert torch.allclose(region_word_scores(v, vm, w, wm, chunk=chunk), full, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="focal"):
        region_word_scores(v, vm, w, wm, focal="prob")
    with pytest.raises(ValueError, match="padding"):
        region_word_scores(v, vm, w, wm, padding="none")
    with pytest.raises(ValueError, match="masks"):
        region_word_scores(v, vm[:, :3], w, wm)


def test_rwa_loss_closed_form():
    """Per row: Σ_j P log P + (1 - P_ii) ln 1e6 - P_ii ln(1 + 1e-6) (spec §2.3 d), softmax over texts only."""
    s = torch.tensor([[0.9, 0.1, -0.3], [0.2, 0.5, 0.4], [-0.1, 0.8, 0.0]], dtype=torch.float64)
    p = torch.softmax(20 * s, dim=1)
    rows = (p * p.log()).sum(1) + (1 - p.diag()) * math.log(1e6) - p.diag() * math.log(1 + 1e-6)
    assert abs(rwa_loss(s).item() - rows.mean().item()) < 1e-12
    assert rwa_loss(s).item() != pytest.approx(rwa_loss(s.t()).item())  # one direction: not symmetric


def _method(**overrides):
    torch.manual_seed(0)
    args = [f"method.{k}={v}" for k, v in overrides.items()]
    return build_method(tiny_config("demovlp", *args)).double().eval()


def test_similarity_is_global_plus_transposed_local():
    m = _method()
    g = torch.Generator().manual_seed(2)
    video = Embeddings(torch.randn(3, 32, generator=g, dtype=torch.float64),
                       torch.randn(3, 8, 32, generator=g, dtype=torch.float64), torch.rand(3, 8, generator=g) > 0.2)
    text = Embeddings(torch.randn(5, 32, generator=g, dtype=torch.float64),
                      torch.randn(5, 6, 32, generator=g, dtype=torch.float64), torch.rand(5, 6, generator=g) > 0.2)
    sim = m.similarity(text, video)
    assert sim.shape == (5, 3)  # [N_text, N_video]
    for t in range(5):
        for v in range(3):
            glob = F.cosine_similarity(text.pooled[t], video.pooled[v], dim=0)
            local = region_word_scores(video.tokens[v:v + 1], video.mask[v:v + 1], text.tokens[t:t + 1],
                                       text.mask[t:t + 1])[0, 0]
            assert abs(sim[t, v].item() - (glob + local).item()) < 1e-9
    with pytest.raises(ValueError, match="as many texts as videos"):
        _method(eval_transpose_bug=True).similarity(text, video)
    square = text.index(slice(0, 3))
    bug = _method(eval_transpose_bug=True).similarity(square, video)
    ok = m.similarity(square, video)
    assert torch.allclose(bug.diag(), ok.diag()) and not torch.allclose(bug, ok)
    local = region_word_scores(video.tokens, video.mask, square.tokens, square.mask)  # [video, text]
    glob = ok - local.t()
    assert torch.allclose(bug, glob + local)  # the official untransposed sum


def test_losses_equal_the_official_global_local_loss():
    """Given the embeddings, NormSoftmax on the CLS cosines + RWA on the local scores, unweighted: the official
    GlobalLocalLoss outputs (its inputs rebuilt here as embeddings)."""
    m = _method()
    v, vm, w, wm = _official_inputs()
    g_t = torch.sin(torch.arange(12, dtype=torch.float64).reshape(4, 3) * 1.3)
    g_v = torch.cos(torch.arange(12, dtype=torch.float64).reshape(4, 3) * 0.9)
    m.encode_video = lambda batch: Embeddings(g_v, v, vm)  # type: ignore[method-assign]
    m.encode_text = lambda batch: Embeddings(g_t, w, wm)  # type: ignore[method-assign]
    terms = m.losses({})
    total, glob, local = OFFICIAL_GLOBAL_LOCAL
    assert abs((terms["nce_t2v"] + terms["nce_v2t"]).item() - glob) < 1e-10
    assert abs(terms["rwa"].item() - local) < 1e-10
    assert abs(sum(terms.values()).item() - total) < 1e-10


def _overlap_loop(patches, box):
    """Area-weighted mean of the patch cells a box covers, cell by cell."""
    h, w = patches.shape[:2]
    x1, y1, x2, y2 = (float(c) for c in box[:4])
    acc, total = torch.zeros(patches.shape[-1], dtype=patches.dtype), 0.0
    for i in range(h):
        for j in range(w):
            ox = max(0.0, min(x2, (j + 1) / w) - max(x1, j / w))
            oy = max(0.0, min(y2, (i + 1) / h) - max(y1, i / h))
            acc += ox * oy * patches[i, j]
            total += ox * oy
    return acc / total if total > 0 else acc


def test_roi_pool_equals_a_cell_loop():
    g = torch.Generator().manual_seed(1)
    patches = torch.randn(2, 3, 4, 5, 6, generator=g, dtype=torch.float64)  # B, T, h, w, D
    xy = torch.rand(2, 3, 4, 2, generator=g, dtype=torch.float64) * 0.7
    boxes = torch.cat([xy, xy + 0.02 + torch.rand(2, 3, 4, 2, generator=g, dtype=torch.float64) * 0.3], -1)
    boxes[0, 0, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # the whole frame: the mean of every patch
    boxes[0, 0, 1] = torch.tensor([0.3, 0.3, 0.3, 0.5])  # no area: zeros
    out = roi_pool(patches, boxes)
    for b in range(2):
        for t in range(3):
            for k in range(4):
                assert torch.allclose(out[b, t, k], _overlap_loop(patches[b, t], boxes[b, t, k]), atol=1e-12)
    assert torch.allclose(out[0, 0, 0], patches[0, 0].mean((0, 1))) and not out[0, 0, 1].any()


@pytest.mark.parametrize("source", ["roi_pool", "features"])
def test_tiny_forward_backward_every_trainable_parameter_gets_a_gradient(source):
    extra = {"region_source": source, **({"video.feat_dim": 2048} if source == "features" else {})}
    cfg = tiny_config("demovlp", *[f"method.{k}={v}" for k, v in extra.items()])
    torch.manual_seed(0)
    m = build_method(cfg)
    g = torch.Generator().manual_seed(0)
    d = cfg.data
    batch = {"video": torch.randn(3, d.num_frames, 3, d.img_size, d.img_size, generator=g),
             "video_mask": torch.ones(3, d.num_frames, dtype=torch.bool),
             "text": ["a red circle moves left", "a blue square", "a small green cross grows while it rises"],
             **fake_method_inputs(cfg, 3, g, torch.float32)}
    assert ("region_feats" in batch) == (source == "features")
    terms = m.losses(batch)
    assert set(terms) == {"nce_t2v", "nce_v2t", "rwa"} and all(torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing
    frozen = sorted(n for n, p in m.named_parameters() if not p.requires_grad)
    # only what the official forward never uses stays still: the final norm and norm3 (no time module)
    assert frozen and all(n.startswith("object_model.norm.") or ".norm3." in n for n in frozen), frozen
    assert (m.backbone is None) == (source == "features")


def test_data_inputs_follow_the_region_source():
    assert DemoVLP.data_inputs(tiny_config("demovlp").method) == {"video", "region_boxes"}
    assert DemoVLP.data_inputs(tiny_config("demovlp", "method.region_source=features").method) == {"region_feats"}
    cfg = OmegaConf.to_container(tiny_config("demovlp").method)
    cfg["backbone"] = {}
    with pytest.raises(ValueError, match="method.backbone"):
        DemoVLP(OmegaConf.create(cfg))


def test_paper_size_parameter_counts():
    """ObjectTransformer-B 86,880,768 (spec §1.2, ran) + DistilBERT 66,362,880 + txt_proj 768*256 + 256."""
    from vtp_bench.config import load_config

    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    with torch.device("meta"):
        m = build_method(load_config("demovlp_msrvtt"))  # fine-tuning: 8 frames
        pre = build_method(load_config("demovlp_webvid"))  # pre-training: 1 frame
    assert count(m.object_model) == 86_880_768
    assert count(m.text_model) == 66_362_880
    assert count(m.txt_proj) == 196_864
    assert count(m) == 153_440_512
    assert count(pre) == 153_440_512 - 7 * 768  # temporal_embed of 1 frame instead of 8
    assert m.object_model.num_regions == 30 and m.text_model.max_length == 100 and m.text_model.padding == "max_length"


def test_loads_official_checkpoints_and_vtp_bench_pretraining(tmp_path):
    """An official ObjectRelation file (module. prefix, HF keys under text_model., 1 frame) into an 8-frame model:
    every tensor arrives, temporal_embed zero-padded (load_temporal_fix='zeros'); and a vtp_bench run's weights."""
    from vtp_bench.models.checkpoints import load_official

    features = ["method.region_source=features", "method.video.feat_dim=2048"]
    torch.manual_seed(1)
    one = build_method(tiny_config("demovlp", *features, "method.video.num_frames=1"))
    sd = {"module." + (k.replace("text_model.model.", "text_model.", 1)): v for k, v in one.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "official.pth")
    eight = build_method(tiny_config("demovlp", *features, "method.video.num_frames=8"))
    report = load_official(eight, tmp_path / "official.pth")
    assert report.source == "demovlp" and any("temporal_embed" in n for n in report.notes)
    mine = eight.state_dict()
    for k, v in one.state_dict().items():
        if k != "object_model.temporal_embed":
            assert torch.equal(mine[k], v), k
    te = mine["object_model.temporal_embed"]
    assert torch.equal(te[:, :1], one.state_dict()["object_model.temporal_embed"]) and not te[:, 1:].any()

    torch.manual_seed(2)
    run = build_method(tiny_config("demovlp"))  # RoI-pool variant: its backbone travels too
    torch.save({"state_dict": {"method." + k: v for k, v in run.state_dict().items()}}, tmp_path / "run.ckpt")
    fresh = build_method(tiny_config("demovlp"))
    load_official(fresh, tmp_path / "run.ckpt")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in run.state_dict().items())


def _vm_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


@pytest.mark.slow
def test_memory_of_a_1000_by_1000_test_matrix():
    """The paper's test-set sizes: 1,000 videos of 8 frames x 30 regions, texts of 100 tokens (99 local), 256-d,
    through ``similarity``: the extra peak RSS (VmHWM after resetting it) stays under 2 GiB, and does not grow with
    the number of texts, since blocks of 32 x 32 pairs are scored one after the other. 64 texts here (the full
    1,000 x 1,000 matrix is ~1e6 pairs x ~30 MFLOP: about an hour on one CPU core, minutes on a GPU)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs /proc/self/clear_refs to reset the peak RSS")
    m = build_method(tiny_config("demovlp"))
    g = torch.Generator().manual_seed(0)
    n, n_text = 1000, 64
    video = Embeddings(torch.randn(n, 256, generator=g), torch.randn(n, 240, 256, generator=g),
                       torch.rand(n, 240, generator=g) > 0.3)
    text = Embeddings(torch.randn(n_text, 256, generator=g), torch.randn(n_text, 99, 256, generator=g),
                      torch.arange(99)[None] < torch.randint(8, 40, (n_text, 1), generator=g))
    extra = []
    for k in (32, 64):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _vm_kib("VmRSS")
        with torch.no_grad():
            sim = m.similarity(text.index(slice(0, k)), video)
        extra.append((_vm_kib("VmHWM") - before) / 2**20)
        assert sim.shape == (k, n) and torch.isfinite(sim).all()
    assert max(extra) < 2.0, f"{extra} GiB extra"
    assert extra[1] < extra[0] + 0.25, f"peak memory grows with the number of texts: {extra} GiB"
