"""SpaceTimeViT against Frozen-in-Time's SpaceTimeTransformer semantics (specs/miles.md §1.1).

The reference (``helpers.official.reference_forward``) is written from the spec's pseudo-code only: it reads the
weights from the state dict by their official names and recomputes everything with explicit maths
(unfold-and-matmul patch embedding, LayerNorm and GELU by formula, explicit softmax attention with a loop over
groups).
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers.official import official_keys_and_shapes, reference_forward
from vtp_bench.models.video.space_time_vit import SpaceTimeViT, VarAttention

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_frames=4)


def _randomized(seed=0, **kw):
    """A model whose every parameter (norms and embeddings included) is far from its init."""
    torch.manual_seed(seed)
    model = SpaceTimeViT(**{**SMALL, **kw}).eval()
    with torch.no_grad():
        for name, prm in model.named_parameters():
            scale = 0.5 if ("embed" in name or "cls" in name or "norm" in name) else 0.05
            prm.add_(scale * torch.randn_like(prm))
    return model


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("frames", [4, 3, 2, 1])
def test_equals_explicit_reference(frames):
    model = _randomized(depth=3)
    video = torch.randn(3, frames, 3, 32, 32)
    with torch.no_grad():
        out = model(video)
        ref = reference_forward(model.state_dict(), video, heads=4, patch=8, depth=3)
    assert out.tokens.shape == (3, 1 + frames * 16, 48)
    torch.testing.assert_close(out.tokens, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, ref[:, 0], atol=1e-5, rtol=1e-5)
    assert out.grid == (frames, 4, 4)


def test_time_output_is_not_added_to_the_residual():
    model = _randomized(seed=1)
    video = torch.randn(2, 4, 3, 32, 32)
    sd = model.state_dict()
    with torch.no_grad():
        ours = model(video).tokens
        official = reference_forward(sd, video, heads=4, patch=8, depth=2)
        added = reference_forward(sd, video, heads=4, patch=8, depth=2, time_residual=True)
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)
    assert (ours - added).abs().max() > 1e-2  # the alternative is far away, so the check has teeth


def test_time_branch_only_reaches_the_output_through_spatial_attention():
    """With the spatial attention's proj and the MLP's fc2 zeroed, the official block is the identity, so
    the time-attention weights cannot matter; if t were added to the residual they would."""
    model = _randomized(seed=2, depth=1)
    blk = model.blocks[0]
    with torch.no_grad():
        for lin in (blk.attn.proj, blk.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
        video = torch.randn(1, 4, 3, 32, 32)
        before = model(video).tokens
        blk.timeattn.proj.weight.normal_()
        blk.timeattn.proj.bias.normal_()
        after = model(video).tokens
    torch.testing.assert_close(before, after, atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["space", "time"])
def test_attention_groups_and_cls(mode):
    """Perturb the token of frame 3 at position p: exactly CLS plus that token's group must change
    (its frame for space, its position for time). Perturb CLS: every token changes."""
    torch.manual_seed(3)
    frames, p_per_frame, d = 4, 9, 32
    att = VarAttention(d, num_heads=4).eval()
    x = torch.randn(2, 1 + frames * p_per_frame, d)
    pos = 5
    tok = 1 + 3 * p_per_frame + pos
    y = x.clone()
    y[:, tok] += torch.randn(d)
    with torch.no_grad():
        changed = (att(y, frames, mode) - att(x, frames, mode)).abs().amax(dim=(0, 2)) > 1e-6
    if mode == "space":
        group = {1 + 3 * p_per_frame + j for j in range(p_per_frame)}
    else:
        group = {1 + f * p_per_frame + pos for f in range(frames)}
    assert set(torch.nonzero(changed).flatten().tolist()) == {0} | group
    y = x.clone()
    y[:, 0] += torch.randn(d)
    with torch.no_grad():
        changed = (att(y, frames, mode) - att(x, frames, mode)).abs().amax(dim=(0, 2)) > 1e-6
    assert bool(changed.all())


def test_parameter_names_and_shapes_are_the_official_keys():
    with torch.device("meta"):
        model = SpaceTimeViT.preset("base")
    expected = official_keys_and_shapes(depth=12, d=768, p=196, frames=4, patch=16, mlp=3072)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected
    assert len(expected) == 3 + 2 + 2 + 12 * 18
    assert {k for k, _ in model.named_parameters()} == set(expected)  # no buffers hide among the keys


def test_base_parameter_count():
    d, mlp, p, frames = 768, 3072, 196, 4
    attention = (d * 3 * d + 3 * d) + (d * d + d)
    block = 3 * (2 * d) + 2 * attention + (d * mlp + mlp) + (mlp * d + d)
    embed = (3 * 16 * 16 * d + d) + d + (p + 1) * d + frames * d
    analytic = embed + 12 * block + 2 * d
    with torch.device("meta"):
        model = SpaceTimeViT.preset("base")
    count = sum(prm.numel() for prm in model.parameters())
    assert count == analytic == 114_168_576
    assert count + (768 * 1000 + 1000) == 114_937_576  # the spec's measurement, with the 1000-way head


def test_time_init_zeros_is_the_official_init_and_starts_as_vit():
    """time_init='zeros': temporal qkv = 0, proj weight = 1, proj bias = 0, so the temporal branch outputs
    exactly 0; with one frame the model then equals timm's ViT whose weights it loads like Frozen does."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, qkv_bias=True, num_classes=10
    ).eval()
    model = SpaceTimeViT(**SMALL, time_init="zeros").eval()
    t = model.blocks[0].timeattn
    assert not t.qkv.weight.any() and not t.qkv.bias.any() and not t.proj.bias.any()
    assert torch.equal(t.proj.weight, torch.ones_like(t.proj.weight))
    missing, unexpected = model.load_state_dict(vit.state_dict(), strict=False)
    assert set(unexpected) == {"head.weight", "head.bias"}
    assert set(missing) == {"temporal_embed"} | {
        f"blocks.{i}.{n}.{w}" for i in range(2) for n in ("timeattn.qkv", "timeattn.proj", "norm3")
        for w in ("weight", "bias")
    }
    assert not model.temporal_embed.any()  # temporal_embed starts at zero (only pos/cls are trunc-normal)
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model(frame[:, None]).tokens
        theirs = vit.forward_features(frame)
        x = torch.randn(2, 1 + 4 * 16, 48)
        assert not model.blocks[1].timeattn(x, 4, "time").any()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_default_init_follows_official():
    """pos_embed / cls_token: trunc-normal std 0.02 (timm's, cut at +-2 absolute, so in effect N(0, 0.02));
    for num_frames > 1 every Linear keeps PyTorch's default uniform(+-1/sqrt(fan_in)) init."""
    torch.manual_seed(5)
    video_model = SpaceTimeViT(**SMALL)
    w = video_model.blocks[0].mlp.fc1.weight
    bound = 1 / math.sqrt(w.shape[1])
    assert w.abs().max() <= bound and abs(w.std().item() - bound / math.sqrt(3)) < 0.01
    assert video_model.blocks[0].attn.qkv.bias.any()  # default init, not zeroed
    assert 0.015 < video_model.pos_embed.std() < 0.025 and 0.01 < video_model.cls_token.std() < 0.03
    image_model = SpaceTimeViT(**{**SMALL, "num_frames": 1})  # one frame: _init_weights, as the official code
    assert abs(image_model.blocks[0].mlp.fc1.weight.std().item() - 0.02) < 0.002
    assert not image_model.blocks[0].attn.qkv.bias.any()
    with pytest.raises(ValueError, match="time_init"):
        SpaceTimeViT(**SMALL, time_init="random")


def test_fewer_frames_truncate_the_temporal_embedding_more_frames_refused():
    model = _randomized(seed=6)
    short = SpaceTimeViT(**{**SMALL, "num_frames": 2}).eval()
    sd = model.state_dict()
    sd["temporal_embed"] = sd["temporal_embed"][:, :2]  # Frozen's _inflate_positional_embeds truncation
    short.load_state_dict(sd)
    video = torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(video).tokens, short(video).tokens, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="temporal embeddings for 4"):
        model(torch.randn(1, 5, 3, 32, 32))
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 2, 3, 48, 48))
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        model(torch.randn(2, 3, 32, 32))


def test_video_mask_is_returned_but_padding_frames_are_not_masked_in_the_maths():
    model = _randomized(seed=7)
    video = torch.randn(2, 4, 3, 32, 32)
    video[1, 2:] = 0  # Frozen's loader: padding frames are zero images
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    with torch.no_grad():
        masked, plain = model(video, mask), model(video)
    torch.testing.assert_close(masked.tokens, plain.tokens, atol=0, rtol=0)
    assert plain.mask is None and masked.mask.dtype == torch.bool and masked.mask.shape == (2, 65)
    assert masked.mask[0].all() and masked.mask[1, :33].all() and not masked.mask[1, 33:].any()
    with pytest.raises(ValueError, match="video_mask"):
        model(video, mask[:, :3])


def test_patch_hook_replaces_patch_embeddings_before_positions():
    model = _randomized(seed=8)
    calls = []

    def hook(x):
        calls.append(tuple(x.shape))
        return torch.zeros_like(x)  # e.g. every patch replaced by a (zero) mask token

    with torch.no_grad():
        a = model(torch.randn(2, 3, 3, 32, 32), patch_hook=hook)
        b = model(torch.randn(2, 3, 3, 32, 32), patch_hook=hook)
        same = model(torch.ones(1, 3, 3, 32, 32), patch_hook=lambda x: x)
        plain = model(torch.ones(1, 3, 3, 32, 32))
    assert calls == [(2, 48, 48), (2, 48, 48)]
    torch.testing.assert_close(a.tokens, b.tokens)  # the content is gone: only positions remain
    assert (a.tokens[:, 1] - a.tokens[:, 2]).abs().max() > 1e-3  # positions were added after the hook
    torch.testing.assert_close(same.tokens, plain.tokens, atol=0, rtol=0)


def test_grad_checkpointing_same_values_and_grads():
    model = _randomized(seed=9)
    ckpt = _randomized(seed=9, grad_checkpointing=True)
    video = torch.randn(2, 4, 3, 32, 32)
    model.train(), ckpt.train()
    model(video).pooled.square().sum().backward()
    ckpt(video).pooled.square().sum().backward()
    for (name, a), (_, b) in zip(model.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_drop_path_schedule_and_train_eval():
    model = _randomized(seed=10, depth=3, drop_path_rate=0.3)
    rates = [getattr(blk.drop_path, "drop_prob", 0.0) for blk in model.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 3))
    plain = _randomized(seed=10, depth=3)
    video = torch.randn(8, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(video).tokens, plain(video).tokens, atol=0, rtol=0)
        model.train()
        torch.manual_seed(0)
        t1 = model(video).tokens
        torch.manual_seed(1)
        t2 = model(video).tokens
    assert (t1 - t2).abs().max() > 1e-4


def test_presets_and_registry():
    from vtp_bench.models.build import build_encoder
    from vtp_bench.registry import ENCODERS

    assert ENCODERS.get("space_time_vit") is SpaceTimeViT
    tiny = build_encoder({"name": "space_time_vit", "preset": "tiny"}, "method.video")
    assert isinstance(tiny, SpaceTimeViT) and tiny.width == 128 and tiny.num_frames == 4
    out = SpaceTimeViT.preset("tiny", num_frames=2)(torch.randn(1, 2, 3, 64, 64))
    assert out.pooled.shape == (1, 128) and out.grid == (2, 4, 4)
    with pytest.raises(KeyError, match="tiny"):
        SpaceTimeViT.preset("huge")


def test_freeze_keeps_eval_mode_and_lets_gradients_through_the_patch_hook():
    model = SpaceTimeViT(**SMALL, freeze=True).train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    token = torch.zeros(48, requires_grad=True)  # e.g. MILES's trainable mask token, inserted by the hook
    # squared: the plain sum of a LayerNorm's output does not depend on its input (unit gain), so its gradient is 0
    model(torch.randn(1, 2, 3, 32, 32), patch_hook=lambda x: x + token).pooled.pow(2).sum().backward()
    assert token.grad is not None and token.grad.abs().sum() > 0


def test_bf16_autocast_close_to_fp32():
    model = _randomized(seed=11)
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        ref = model(video).pooled
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(video).pooled
    assert 0 < (low.float() - ref).abs().max()  # autocast did run in bf16 (the final LayerNorm returns fp32)
    assert torch.nn.functional.cosine_similarity(low.float(), ref, dim=-1).min() > 0.99


def test_bench_script_runs_and_its_reference_agrees(tmp_path):
    """``make bench`` at tiny size: the benchmark's explicit-softmax reference equals our model."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_encoders.py"
    spec = importlib.util.spec_from_file_location("bench_encoders", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--preset", "tiny", "--batch", "1", "--warmup", "0", "--iters", "1",
                         "--json", str(tmp_path / "b.json")])
    assert result["max_abs_out_diff"] < 1e-5 and result["rel_grad_diff"] < 1e-5
    assert json.loads((tmp_path / "b.json").read_text())["speedup"] > 0
