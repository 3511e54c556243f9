"""DemoVLP's ObjectTransformer (specs/demovlp.md §1.2) against an explicit computation from the spec: additive
``(mask - 1) * 100`` padding bias, CLS over everything, regions over CLS + their own frame, no final norm."""

from __future__ import annotations

import math

import pytest
import torch

from vtp_bench.models.video.object_transformer import ObjectTransformer

SMALL = dict(feat_dim=2048, embed_dim=32, depth=2, num_heads=4, num_regions=5, num_frames=4, output_dim=16)


def _ln(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps) * w + b


def _attend(q, k, v, bias):
    """q [B, H, Lq, c], k/v [B, H, Lk, c], bias [B, Lk] additive -> explicit softmax."""
    s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias[:, None, None, :]
    p = (s - s.amax(-1, keepdim=True)).exp()
    return (p / p.sum(-1, keepdim=True)) @ v


def reference(sd, feats, boxes, mask, heads, depth):
    b, t, k, _ = feats.shape
    x = feats @ sd["object_embedding.weight"].T + sd["object_embedding.bias"]
    x = x + boxes @ sd["pos_embedding.weight"].T + sd["pos_embedding.bias"]
    x = x + sd["temporal_embed"][0, :t][None, :, None, :]
    x = torch.cat([(sd["cls_token"] + sd["custom_pos_embed"][:, :1]).expand(b, 1, -1), x.reshape(b, t * k, -1)], 1)
    bias = (torch.cat([torch.ones(b, 1), mask.reshape(b, t * k).float()], 1) - 1) * 100
    d = x.shape[-1]
    for i in range(depth):
        g = lambda n: (sd[f"blocks.{i}.{n}.weight"], sd[f"blocks.{i}.{n}.bias"])  # noqa: E731
        h = _ln(x, *g("norm1"))
        qkv = (h @ sd[f"blocks.{i}.attn.qkv.weight"].T + sd[f"blocks.{i}.attn.qkv.bias"])
        qkv = qkv.reshape(b, -1, 3, heads, d // heads)
        q, kk, v = qkv.permute(2, 0, 3, 1, 4)
        out = torch.zeros_like(q)
        out[:, :, :1] = _attend(q[:, :, :1], kk, v, bias)
        for f in range(t):
            idx = [0] + [1 + f * k + j for j in range(k)]
            out[:, :, idx[1:]] = _attend(q[:, :, idx[1:]], kk[:, :, idx], v[:, :, idx], bias[:, idx])
        att = out.transpose(1, 2).reshape(b, -1, d)
        x = x + att @ sd[f"blocks.{i}.attn.proj.weight"].T + sd[f"blocks.{i}.attn.proj.bias"]
        h = _ln(x, *g("norm2")) @ sd[f"blocks.{i}.mlp.fc1.weight"].T + sd[f"blocks.{i}.mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = x + h @ sd[f"blocks.{i}.mlp.fc2.weight"].T + sd[f"blocks.{i}.mlp.fc2.bias"]
    return x @ sd["proj.weight"].T  # no final norm


def _randomized(seed=0, **kw):
    torch.manual_seed(seed)
    model = ObjectTransformer(**{**SMALL, **kw}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_((0.3 if "embed" in name or "norm" in name or "cls" in name else 0.03) * torch.randn_like(p))
    return model


def _inputs(b=3, t=4, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, t, k, generator=g) > 0.3
    mask[:, :, 0] = True
    return torch.randn(b, t, k, 2048, generator=g), torch.rand(b, t, k, 6, generator=g), mask


@pytest.mark.parametrize("frames", [4, 2])
def test_equals_explicit_reference(frames):
    model = _randomized()
    feats, boxes, mask = _inputs(t=frames)
    with torch.no_grad():
        out = model(feats, boxes, mask)
        ref = reference(model.state_dict(), feats, boxes, mask, heads=4, depth=2)
    assert out.tokens.shape == (3, 1 + frames * 5, 16)
    torch.testing.assert_close(out.tokens, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, ref[:, 0])
    assert out.mask.dtype == torch.bool and out.mask[:, 0].all() and torch.equal(out.mask[:, 1:], mask.reshape(3, -1))


def test_padded_regions_do_not_reach_the_cls_token():
    model = _randomized(seed=1)
    feats, boxes, mask = _inputs(seed=1)
    other = feats.clone()
    other[~mask] = 100 * torch.randn_like(other[~mask])  # (the official loader repeats the last real row)
    with torch.no_grad():
        a, b = model(feats, boxes, mask), model(other, boxes, mask)
        c = model(other, boxes)  # without the mask the content matters
    assert (a.pooled - b.pooled).abs().max() < 1e-6
    assert (a.pooled - c.pooled).abs().max() > 1e-2


def test_official_names_and_base_size():
    with torch.device("meta"):
        base = ObjectTransformer.preset("base")
    keys = set(base.state_dict())
    assert {"cls_token", "custom_pos_embed", "temporal_embed", "object_embedding.weight", "pos_embedding.bias",
            "norm.weight", "proj.weight", "blocks.11.norm3.weight", "blocks.0.attn.qkv.weight"} <= keys
    assert "proj.bias" not in keys and not any("timeattn" in k for k in keys)
    assert base.custom_pos_embed.shape == (1, 31, 768) and base.temporal_embed.shape == (1, 8, 768)
    assert sum(p.numel() for p in base.parameters()) == 86_880_768


def test_time_module_and_errors():
    model = _randomized(seed=2, time_module="timeattn")
    assert hasattr(model.blocks[0], "timeattn")
    feats, boxes, mask = _inputs(seed=2)
    plain = _randomized(seed=2)
    with torch.no_grad():
        assert (model(feats, boxes, mask).pooled - plain(feats, boxes, mask).pooled).abs().max() > 1e-4
    with pytest.raises(ValueError, match="temporal embeddings for 4"):
        plain(*_inputs(t=5))
    with pytest.raises(ValueError, match="region_boxes"):
        plain(feats, boxes[..., :4], mask)
    with pytest.raises(ValueError, match="time_module"):
        ObjectTransformer(**SMALL, time_module="conv")
    with pytest.raises(ValueError, match="num_regions"):  # other K would regroup tokens across frames
        plain(feats[:, :, :-1], boxes[:, :, :-1], mask[:, :, :-1])
    fresh = ObjectTransformer(**SMALL, time_module="timeattn")  # DemoVLP's time_init="rand": not the zeros init
    assert fresh.blocks[0].timeattn.qkv.weight.abs().sum() > 0
