"""CLIP4Clip meanP against independent computations: open_clip's and HuggingFace's own CLIP forward, the
official ``CrossEn`` loss written out, CLIP4Clip's ``max_words`` cut, and the logit-scale clamp after a step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from helpers.clip import TINY_CLIP_TOWERS, hf_tiny_clip, open_clip_tiny
from vtp_bench.data.transforms import normalize
from vtp_bench.methods.clip4clip import CLIP_MEAN, CLIP_STD, Clip4Clip, Clip4ClipConfig, cut_tokens, imagenet_to_clip
from vtp_bench.models.checkpoints import load_official

TEXTS = ["a small red circle moves left while a large blue square grows", "cat!", "two people cook pasta"]


def tiny_clip4clip(**kw) -> Clip4Clip:
    return Clip4Clip(OmegaConf.structured(Clip4ClipConfig(**{**TINY_CLIP_TOWERS, **kw}))).eval()


def test_pixels_are_renormalised_to_clip_statistics():
    x = torch.rand(2, 3, 3, 8, 8)
    clip = (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(imagenet_to_clip(normalize(x.flatten(0, 1)).reshape(x.shape)), clip)


def test_max_words_cut_equals_tokenizing_to_that_length():
    """CLIP4Clip's max_words=32 is open_clip's tokenizer with context 32: <sot> + 30 tokens + <eot>."""
    from open_clip.tokenizer import SimpleTokenizer

    long = " ".join(["red circle"] * 40)
    ids = SimpleTokenizer(context_length=77)([long, "cat", "a dog"])
    ref = SimpleTokenizer(context_length=32)([long, "cat", "a dog"])
    cut = cut_tokens(ids, 32)
    assert cut.shape == (3, 32) and torch.equal(cut, ref)
    short = cut_tokens(ids[1:], 32)  # trailing padding after the batch's last <eot> is dropped
    assert short.shape == (2, 4) and torch.equal(short, ref[1:, :4])


def test_embeddings_equal_open_clip_forward_with_mean_pooling(tmp_path):
    model = open_clip_tiny(seed=7)
    path = tmp_path / "open_clip.pt"
    torch.save(model.state_dict(), path)
    m = tiny_clip4clip()
    report = load_official(m, path)
    assert not report.untouched and m.logit_scale.item() == pytest.approx(model.logit_scale.item())
    torch.manual_seed(0)
    video = torch.randn(3, 4, 3, 64, 64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        ours_v = m.encode_video({"video": video, "video_mask": mask}).pooled
        ours_t = m.encode_text({"text": TEXTS}).pooled
        frames = model.encode_image(imagenet_to_clip(video).flatten(0, 1)).reshape(3, 4, -1)
        from open_clip.tokenizer import SimpleTokenizer

        # CLIP4Clip runs the text tower on 32 positions; with causal attention, zero columns after them change
        # nothing, so open_clip's 77-position forward of the 32-token ids is the reference
        ref_t = model.encode_text(F.pad(SimpleTokenizer(context_length=32)(TEXTS), (0, 45)))
    for b in range(3):  # CLIP4Clip's _mean_pooling_for_similarity_visual over normalised frames, real ones only
        real = F.normalize(frames[b, mask[b]], dim=-1)
        torch.testing.assert_close(ours_v[b], real.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours_t, ref_t, atol=1e-5, rtol=1e-4)


def test_hf_clip_weights_give_hf_features(tmp_path):
    hf = hf_tiny_clip(seed=5)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    m = tiny_clip4clip()
    assert load_official(m, tmp_path / "pytorch_model.bin").source == "hf_clip"
    video = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        ours = m.encode_video({"video": video}).pooled
        pixels = imagenet_to_clip(video).flatten(0, 1)
        ref = hf.visual_projection(hf.vision_model(pixel_values=pixels).pooler_output).reshape(2, 3, -1)
    torch.testing.assert_close(ours, F.normalize(ref, dim=-1).mean(1), atol=1e-5, rtol=1e-4)


def crossen_reference(text: torch.Tensor, video: torch.Tensor, logit_scale: float) -> float:
    """CLIP4Clip's loss: logits = exp(s) * cos; CrossEn(logits) = mean_i -log softmax_row(i)[i]; ½(rows + cols),
    written with explicit loops."""
    n = text.shape[0]
    sim = [[math.exp(logit_scale) * F.cosine_similarity(text[i], video[j], dim=0).item() for j in range(n)]
           for i in range(n)]
    rows = sum(-(sim[i][i] - math.log(sum(math.exp(sim[i][j]) for j in range(n)))) for i in range(n)) / n
    cols = sum(-(sim[j][j] - math.log(sum(math.exp(sim[i][j]) for i in range(n)))) for j in range(n)) / n
    return (rows + cols) / 2


def test_loss_is_clip4clip_crossen_with_the_learnable_scale():
    torch.manual_seed(1)
    m = tiny_clip4clip()
    with torch.no_grad():
        m.logit_scale.fill_(math.log(30.0))
    batch = {"video": torch.randn(3, 2, 3, 64, 64), "text": TEXTS}
    terms = m.losses(batch)
    with torch.no_grad():
        t, v = m.encode_text(batch).pooled, m.encode_video(batch).pooled
    assert sum(terms.values()).item() == pytest.approx(crossen_reference(t, v, math.log(30.0)), rel=1e-5)
    sum(terms.values()).backward()
    assert m.logit_scale.grad is not None and m.logit_scale.grad.abs() > 0


@pytest.mark.parametrize("method", ["clip4clip", "promptswitch"])
def test_logit_scale_clamp_holds_after_a_step_that_passes_it(method):
    """An AdamW step pushes the scale past ln 100; the callback VTPModule registers to run after every step
    (``MethodStepHook``) brings it back."""
    from types import SimpleNamespace

    from conftest import tiny_config
    from vtp_bench.config import to_dict
    from vtp_bench.lit import MethodStepHook, VTPModule

    module = VTPModule(to_dict(tiny_config(method, "optim.lr=1.0")))
    hook = next(c for c in module.configure_callbacks() if isinstance(c, MethodStepHook))
    m = module.method
    with torch.no_grad():
        m.logit_scale.fill_(math.log(100) - 1e-3)
    groups = m.param_groups(1.0, 0.0)
    opt = torch.optim.AdamW(groups)
    (-10 * m.logit_scale).backward()  # a gradient that increases the scale
    opt.step()
    assert m.logit_scale.item() > math.log(100) + 0.5  # the step did pass the bound: the clamp has work to do
    hook.on_train_batch_end(SimpleNamespace(global_step=1), module)
    assert m.logit_scale.item() == pytest.approx(math.log(100), abs=1e-7)
    with torch.no_grad():
        m.logit_scale.fill_(1.0)
    hook.on_train_batch_end(SimpleNamespace(global_step=2), module)  # only an upper bound
    assert m.logit_scale.item() == 1.0


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="max_words"):
        tiny_clip4clip(max_words=100)
    with pytest.raises(ValueError, match="clip_vit"):
        tiny_clip4clip(video={"name": "space_time_vit", "preset": "tiny"})
