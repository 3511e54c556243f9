"""clip_vit / clip_text against open_clip's own forward, the per-layer hook against an explicit Prompt Cube
reference (specs/promptswitch.md §3), pooling, masks and the tower options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.clip import prompt_cube_reference
from vtp_bench.models.build import build_encoder
from vtp_bench.models.text.clip_text import ClipText
from vtp_bench.models.video.clip_vit import ClipLayerHook, ClipViT


def _randomized(cls, seed=0, **kw):
    torch.manual_seed(seed)
    model = cls.preset("tiny", **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_clip_vit_equals_open_clip_per_frame():
    model = _randomized(ClipViT)
    v = model.visual
    video = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        out = model(video)
        ref = v(video.flatten(0, 1))  # open_clip's own forward (nn.MultiheadAttention): ln_post(CLS) @ proj
        ref_tokens = v.ln_post(v.transformer(v._embeds(video.flatten(0, 1))))[:, 1:]
    torch.testing.assert_close(out.frames.flatten(0, 1), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.tokens, ref_tokens.reshape(2, 3 * 16, 128), atol=1e-5, rtol=1e-5)
    per_frame = F.normalize(ref.reshape(2, 3, -1), dim=-1)
    torch.testing.assert_close(out.pooled, per_frame.mean(1), atol=1e-6, rtol=1e-5)
    assert out.grid == (3, 4, 4) and out.hidden.shape == (2, 3, 17, 128) and model.width == 64


def test_clip_vit_pooling_over_real_frames_only():
    model = _randomized(ClipViT, seed=1)
    raw = _randomized(ClipViT, seed=1, frame_pooling="mean")
    video = torch.randn(2, 4, 3, 64, 64)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    with torch.no_grad():
        out, plain = model(video, mask), raw(video, mask)
    f = out.frames
    torch.testing.assert_close(out.pooled[1], F.normalize(f[1, :2], dim=-1).mean(0))
    torch.testing.assert_close(plain.pooled[1], f[1, :2].mean(0))
    assert out.mask.shape == (2, 64) and out.mask[1, :32].all() and not out.mask[1, 32:].any()
    with pytest.raises(ValueError, match="frame_pooling"):
        ClipViT.preset("tiny", frame_pooling="max")
    with pytest.raises(ValueError, match="64 x 64"):
        model(torch.randn(1, 2, 3, 32, 32))


class PromptCube(ClipLayerHook):
    """Prompt Switch's cube through the hook: Np prompts per frame appended after ln_pre, and in every layer
    the LayerNorm-ed prompt tokens transposed between frame and slot inside each chunk of Np frames."""

    def __init__(self, cube):
        self.cube = cube  # [Np, Np, W]

    def extra_tokens(self, x, frames):
        n = self.cube.shape[0]
        prompts = self.cube[None].expand(x.shape[0] // frames, frames // n, n, n, -1).reshape(-1, n, x.shape[-1])
        return torch.cat([x, prompts], dim=1)

    def attn_input(self, layer, h, frames):
        n = self.cube.shape[0]
        h = h.reshape(-1, n, *h.shape[1:])  # [B*C, frame-in-chunk, L + Np, W]
        switched = h[:, :, -n:].transpose(1, 2)
        return torch.cat([h[:, :, :-n], switched], dim=2).flatten(0, 1)


def test_layer_hook_reproduces_the_prompt_cube():
    model = _randomized(ClipViT, seed=2)
    torch.manual_seed(0)
    cube = torch.randn(3, 3, 128)
    video = torch.randn(2, 6, 3, 64, 64)  # two chunks of Np = 3 frames
    with torch.no_grad():
        out = model(video, hook=PromptCube(cube))
        ref = prompt_cube_reference(model, video, cube)
        plain = model(video)
    torch.testing.assert_close(out.hidden, ref, atol=1e-5, rtol=1e-5)
    assert out.hidden.shape == (2, 6, 20, 128) and out.tokens.shape == (2, 6 * 16, 128)  # prompts not in tokens
    assert (out.frames - plain.frames).abs().max() > 1e-3  # the prompts reach the CLS token


def test_hook_frame_feature_and_layer_output():
    model = _randomized(ClipViT, seed=3)
    calls = []

    class Probe(ClipLayerHook):
        def layer_output(self, layer, x, frames):
            calls.append(layer)
            return x

        def frame_feature(self, hidden, frames):
            return hidden[:, 1:].mean(1)  # mean of the patch tokens instead of CLS

    video = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        out = model(video, hook=Probe())
        base = model(video, hook=ClipLayerHook())
        ref = model.visual.ln_post(base.hidden.flatten(0, 1)[:, 1:].mean(1)) @ model.visual.proj
    assert calls == [0, 1]
    torch.testing.assert_close(out.frames.flatten(0, 1), ref)
    torch.testing.assert_close(base.frames, model(video).frames, atol=0, rtol=0)


def test_clip_text_equals_open_clip_and_masks_padding():
    model = _randomized(ClipText, seed=4)
    texts = ["a man plays the guitar on a stage", "cat"]
    ids = model.tokenize(texts)
    with torch.no_grad():
        out = model(texts)
        ref = model.text(ids)  # open_clip's TextTransformer.forward: EOT (argmax) pooling, projection
    torch.testing.assert_close(out.pooled, ref, atol=1e-5, rtol=1e-5)
    eot = ids.argmax(-1)
    assert ids[1, eot[1] + 1:].eq(0).all()  # open_clip pads with 0
    assert out.mask.sum(1).tolist() == (eot + 1).tolist() and out.tokens.shape == (2, 77, 128)
    with pytest.raises(TypeError, match="list of strings"):
        model("one string")


def test_tower_options_freeze_and_grad_checkpointing():
    video = torch.randn(2, 2, 3, 64, 64)
    plain = _randomized(ClipViT, seed=5).train()
    ckpt = _randomized(ClipViT, seed=5, grad_checkpointing=True).train()
    plain(video).pooled.square().sum().backward()
    ckpt(video).pooled.square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)

    frozen = build_encoder({"name": "clip_vit", "preset": "tiny", "freeze": True}, "method.video").train()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    cube = torch.zeros(2, 2, 128, requires_grad=True)  # a trainable hook parameter still gets gradients
    frozen(video, hook=PromptCube(cube)).pooled.sum().backward()
    assert cube.grad is not None and cube.grad.abs().sum() > 0
    text = build_encoder({"name": "clip_text", "preset": "tiny", "freeze": True}, "method.text")
    assert not any(p.requires_grad for p in text.parameters())


def test_bf16_autocast_close_to_fp32():
    model = _randomized(ClipViT, seed=6)
    video = torch.randn(2, 2, 3, 64, 64)
    with torch.no_grad():
        ref = model(video).frames
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(video).frames
    assert low.dtype == torch.bfloat16
    assert F.cosine_similarity(low.float(), ref, dim=-1).min() > 0.99


def test_weights_must_be_a_local_file():
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        ClipViT.preset("tiny", weights="openai")
    with pytest.raises(ValueError, match="unknown open_clip model config"):
        ClipText(model="ViT-Q-99")
