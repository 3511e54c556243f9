"""Encoders against independent computations: an explicit-softmax, loop-per-group reference of Frozen's
SpaceTimeTransformer (written from the spec's pseudo-code), analytic parameter counts, and pooling maths."""

from __future__ import annotations

import pytest
import torch

from vtp_bench.models.params import count_parameters
from vtp_bench.models.text.hf_text import HFTextEncoder
from vtp_bench.models.video.space_time_vit import SpaceTimeViT


def _attn_ref(x, lin_qkv, lin_proj, heads, frames, mode):
    """Official VarAttention semantics with explicit loops: CLS attends to all tokens; each patch query
    attends to its group (frame for space, position for time) plus CLS."""
    b, n, d = x.shape
    hd = d // heads
    q, k, v = lin_qkv(x).chunk(3, dim=-1)
    split = lambda t: t.reshape(b, n, heads, hd).permute(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q) * hd**-0.5, split(k), split(v)
    p = (n - 1) // frames
    out = torch.zeros_like(q)
    out[:, :, :1] = torch.softmax(q[:, :, :1] @ k.transpose(-1, -2), -1) @ v
    for g in range(frames if mode == "space" else p):
        idx = [1 + f * p + g for f in range(frames)] if mode == "time" else [1 + g * p + j for j in range(p)]
        kk = torch.cat([k[:, :, :1], k[:, :, idx]], 2)
        vv = torch.cat([v[:, :, :1], v[:, :, idx]], 2)
        out[:, :, idx] = torch.softmax(q[:, :, idx] @ kk.transpose(-1, -2), -1) @ vv
    return lin_proj(out.permute(0, 2, 1, 3).reshape(b, n, d))


def _reference(model: SpaceTimeViT, video: torch.Tensor, add_time_residual: bool = False) -> torch.Tensor:
    b, f = video.shape[:2]
    p = model.patches_per_frame
    x = torch.stack([model.patch_embed.proj(video[:, i]).flatten(2).transpose(1, 2) for i in range(f)], 1)
    x = x.reshape(b, f * p, -1)
    pos = [model.pos_embed[:, :1]] + [model.pos_embed[:, 1:] + model.temporal_embed[:, i : i + 1] for i in range(f)]
    x = torch.cat([model.cls_token.expand(b, -1, -1), x], 1) + torch.cat(pos, 1)
    heads = model.blocks[0].attn.num_heads
    for blk in model.blocks:
        t = _attn_ref(blk.norm3(x), blk.timeattn.qkv, blk.timeattn.proj, heads, f, "time")
        s = _attn_ref(blk.norm1(x + t), blk.attn.qkv, blk.attn.proj, heads, f, "space")
        x = x + s + (t if add_time_residual else 0)
        x = x + blk.mlp.fc2(torch.nn.functional.gelu(blk.mlp.fc1(blk.norm2(x))))
    return model.norm(x)


@pytest.mark.parametrize("frames", [4, 3, 1])
def test_space_time_vit_equals_explicit_reference(frames):
    torch.manual_seed(0)
    model = SpaceTimeViT(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_frames=4).eval()
    video = torch.randn(2, frames, 3, 32, 32)
    with torch.no_grad():
        ours = model(video).tokens
        ref = _reference(model, video)
        wrong = _reference(model, video, add_time_residual=True)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    if frames > 1:  # with one frame the time attention still runs (CLS + itself), the quirk still matters
        assert (ours - wrong).abs().max() > 1e-3


def test_time_attention_output_is_not_in_the_residual_stream():
    """Zero the spatial attention's projection: the official block then passes x through attention
    untouched, so the output must not depend on the time-attention weights at all (before the MLP)."""
    torch.manual_seed(1)
    model = SpaceTimeViT(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_frames=2).eval()
    blk = model.blocks[0]
    for lin in (blk.attn.proj, blk.mlp.fc2):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    video = torch.randn(1, 2, 3, 16, 16)
    with torch.no_grad():
        a = model(video).tokens
        torch.nn.init.normal_(blk.timeattn.proj.weight)
        b = model(video).tokens
    assert torch.allclose(a, b)


def test_fewer_frames_ok_more_frames_refused():
    model = SpaceTimeViT(**SpaceTimeViT.PRESETS["tiny"])
    out = model(torch.randn(1, 2, 3, 64, 64), torch.tensor([[True, True]]))
    assert out.tokens.shape == (1, 1 + 2 * 16, 128) and out.grid == (2, 4, 4)
    assert out.mask.shape == (1, 33)
    with pytest.raises(ValueError, match="temporal embeddings for 4"):
        model(torch.randn(1, 5, 3, 64, 64))


OFFICIAL_BLOCK_KEYS = ["norm1", "attn.qkv", "attn.proj", "timeattn.qkv", "timeattn.proj", "norm2", "mlp.fc1",
                       "mlp.fc2", "norm3"]


def test_parameter_names_are_the_official_keys():
    model = SpaceTimeViT(img_size=32, patch_size=16, embed_dim=16, depth=2, num_heads=2)
    expected = {"cls_token", "pos_embed", "temporal_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                "norm.weight", "norm.bias"}
    for i in range(2):
        for k in OFFICIAL_BLOCK_KEYS:
            expected |= {f"blocks.{i}.{k}.weight", f"blocks.{i}.{k}.bias"}
    assert set(model.state_dict()) == expected


def test_base_parameter_count_matches_official():
    d, mlp, p = 768, 3072, 196
    block = 3 * 2 * d + 2 * (d * 3 * d + 3 * d + d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    analytic = 12 * block + (3 * 16 * 16 * d + d) + d + (p + 1) * d + 4 * d + 2 * d
    with torch.device("meta"):
        model = SpaceTimeViT(**SpaceTimeViT.PRESETS["base"])
    assert count_parameters(model) == analytic == 114_168_576  # spec: 114,937,576 with the 769,000-param head


def test_time_init_zeros_is_official():
    model = SpaceTimeViT(img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=2, time_init="zeros")
    t = model.blocks[0].timeattn
    assert not t.qkv.weight.any() and not t.qkv.bias.any()
    assert torch.equal(t.proj.weight, torch.ones_like(t.proj.weight)) and not t.proj.bias.any()


def test_hf_text_mean_pooling_and_padding_invariance():
    enc = HFTextEncoder(pooling="mean").eval()  # the pretrained MiniLM shipped in a package
    texts = ["a red circle", "a small blue square moves left while a large green triangle grows"]
    with torch.no_grad():
        both = enc(texts)
        alone = enc(texts[:1])
    m = both.mask[0].float().unsqueeze(-1)
    manual = (both.tokens[0] * m).sum(0) / m.sum()
    assert torch.allclose(both.pooled[0], manual, atol=1e-6)
    assert torch.allclose(both.pooled[0], alone.pooled[0], atol=1e-5)
    assert both.mask[0].sum() < both.mask[1].sum()


def test_hf_text_cls_pooling_is_position_zero_and_frozen_has_no_grad():
    enc = HFTextEncoder(config=HFTextEncoder.PRESETS["tiny"]["config"], pooling="cls", freeze=True)
    enc.train()
    assert not enc.model.training  # frozen: no dropout either
    out = enc(["a red circle", "a blue square"])
    assert torch.equal(out.pooled, out.tokens[:, 0])
    assert not out.pooled.requires_grad


def test_distilbert_base_parameter_count():
    with torch.device("meta"):
        enc = HFTextEncoder(config=HFTextEncoder.PRESETS["distilbert-base"]["config"])
    d, h, v, pos, layers = 768, 3072, 30522, 512, 6
    layer = 4 * (d * d + d) + 2 * d + (d * h + h) + (h * d + d) + 2 * d
    assert count_parameters(enc) == v * d + pos * d + 2 * d + layers * layer == 66_362_880
