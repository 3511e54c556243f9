"""Prompt Switch against independent computations: the official forward written out on HuggingFace's CLIP modules
(specs/promptswitch.md §3), the loop reference of the cube (helpers.clip), the official caption loss on HF-style
padding, information flow across frames, the frame-count rule, parameter groups and paper-size parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from helpers.clip import TINY_CLIP_TOWERS, hf_tiny_clip, prompt_cube_reference
from vtp_bench.methods.clip4clip import Clip4Clip, Clip4ClipConfig, imagenet_to_clip
from vtp_bench.methods.promptswitch import (
    FREQUENT_WORDS,
    PromptSwitch,
    PromptSwitchConfig,
    chunk_order,
    repeat_last_real,
)
from vtp_bench.models.checkpoints import load_official

EOT = 49407


def tiny(seed: int = 0, **kw) -> PromptSwitch:
    torch.manual_seed(seed)
    return PromptSwitch(OmegaConf.structured(PromptSwitchConfig(**{**TINY_CLIP_TOWERS, **kw}))).eval()


def randomize_new_parts(m: PromptSwitch, seed: int = 0) -> None:
    """Cube and aggregation away from their init (a zero output projection would hide the aggregation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith(("prompt_cube", "prompt_aggregation")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------ the official forward
def official_video_features(hf, pixels: torch.Tensor, cube: torch.Tensor, mha: torch.nn.MultiheadAttention,
                            nf: int) -> torch.Tensor:
    """specs/promptswitch.md §3.2-3.4 on HuggingFace's CLIP modules: [N, 3, H, W] frames (N a multiple of the
    built ``nf``, consecutive groups of nf frames are one clip) -> per-frame projected features [N, E]. The
    aggregation ``mha`` is sequence-first, as the official ``nn.MultiheadAttention(768, 12)``."""
    n = cube.shape[0]
    vm = hf.vision_model
    h = vm.pre_layrnorm(vm.embeddings(pixels))
    bs, chunks, d = h.shape[0] // nf, nf // n, h.shape[-1]
    h = torch.cat([h, cube[None, None].repeat(bs, chunks, 1, 1, 1).flatten(0, 2)], dim=1)
    ls = h.shape[1] - n
    for layer in vm.encoder.layers:
        x = layer.layer_norm1(h).reshape(bs, chunks, n, ls + n, d).clone()
        for c in range(chunks):
            x[:, c, :, ls:] = x[:, c, :, ls:].clone().transpose(1, 2)  # frame <-> prompt slot, in the chunk
        h = h + layer.self_attn(hidden_states=x.flatten(0, 2))[0]
        h = h + layer.mlp(layer.layer_norm2(h))
    q = h[:, 0].reshape(bs, nf, d).transpose(0, 1)
    kv = h[:, -n:].reshape(bs, nf * n, d).transpose(0, 1)
    pooled = (q + mha(q, kv, kv)[0]).transpose(0, 1).reshape(bs * nf, d)
    return hf.visual_projection(vm.post_layernorm(pooled))


def test_video_embedding_equals_the_official_forward_on_hf_clip(tmp_path):
    """Test-time setting of the official code: built with 6 = Np frames, fed 12 frames per video in the loader's
    chunk-major order, so each half is its own clip; then the mean of the 12 normalised frame features."""
    hf = hf_tiny_clip(seed=2)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    m = tiny(num_prompts=6, caption_weight=0.0)
    assert load_official(m, tmp_path / "pytorch_model.bin").source == "hf_clip"
    randomize_new_parts(m)
    mha = torch.nn.MultiheadAttention(128, 2)  # sequence-first, the official module
    mha.load_state_dict(m.prompt_aggregation.state_dict())
    torch.manual_seed(3)
    video = torch.randn(2, 12, 3, 64, 64)  # temporally ordered, as our sampler returns them
    with torch.no_grad():
        ours = m.encode_video({"video": video}).pooled
        loader_order = video[:, chunk_order(12, 6, "strided")]
        pixels = imagenet_to_clip(loader_order).flatten(0, 1)
        ref = official_video_features(hf, pixels, m.prompt_cube, mha, nf=6).reshape(2, 12, -1)
    torch.testing.assert_close(ours, F.normalize(ref, dim=-1).mean(1), atol=2e-5, rtol=1e-4)


def test_hidden_states_equal_the_loop_reference_of_test_clip():
    """The method's hook on the whole tower against test_clip's per-frame loop reference (contiguous chunks)."""
    m = tiny(seed=4, num_prompts=3, chunking="contiguous", caption_weight=0.0)
    randomize_new_parts(m, seed=4)
    video = torch.randn(2, 6, 3, 64, 64)
    with torch.no_grad():
        out, _ = m.encode_frames(video, None)
        ref = prompt_cube_reference(m.video_model, m.pixels(video), m.prompt_cube)
    torch.testing.assert_close(out.hidden, ref, atol=1e-5, rtol=1e-5)


def test_chunks_follow_the_official_sampler_layout():
    """Official uniform sampling: the video cut into Np segments, chunk c takes one frame of each, in temporal
    order. Our 12 temporally ordered frames regrouped by ``chunk_order`` put chunk c's k-th frame in segment k."""
    from vtp_bench.data.video import sample_indices

    vlen, n, t = 120, 6, 12
    frames = torch.tensor(sample_indices(vlen, t, "uniform"))[chunk_order(t, n, "strided")].reshape(t // n, n)
    seg = [(k * vlen // n, (k + 1) * vlen // n) for k in range(n)]
    for c in range(t // n):
        assert all(seg[k][0] <= int(frames[c, k]) < seg[k][1] for k in range(n))
        assert frames[c].tolist() == sorted(frames[c].tolist())
    assert chunk_order(12, 6, "strided").tolist() == [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]
    assert chunk_order(12, 6, "contiguous").tolist() == list(range(12))


# ------------------------------------------------------------------------- baseline and information flow
def test_no_prompt_tokens_gives_clip4clip_exactly():
    c4c = Clip4Clip(OmegaConf.structured(Clip4ClipConfig(**TINY_CLIP_TOWERS))).eval()
    ps = tiny(num_prompts=0, caption_weight=0.0)
    ps.load_state_dict(c4c.state_dict())
    video, mask = torch.randn(2, 4, 3, 64, 64), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        a = ps.encode_video({"video": video, "video_mask": mask}).pooled
        b = c4c.encode_video({"video": video, "video_mask": mask}).pooled
        with_prompts = tiny(num_prompts=2, caption_weight=0.0)
        with_prompts.load_state_dict(c4c.state_dict(), strict=False)  # cube at the official init, zero out_proj
        c = with_prompts.encode_video({"video": video, "video_mask": mask}).pooled
    assert torch.equal(a, b)
    assert (c - b).abs().max() > 1e-3  # prompts present: not CLIP, even with the aggregation's output at zero


def _frame_embeddings(m: PromptSwitch, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out, _ = m.encode_frames(video, None)
    inverse = torch.argsort(chunk_order(video.shape[1], m.cfg.num_prompts, m.cfg.chunking))
    return out.frames[:, inverse]  # back to temporal order


@pytest.mark.parametrize("switch", [True, False])
def test_information_moves_across_frames_only_through_the_switch(switch):
    """Zero aggregation output (the official init): frame 0's embedding depends on the other frames of its chunk
    only through the switched prompts. With the transpose removed it depends on frame 0 alone."""
    m = tiny(seed=5, num_prompts=3, chunking="contiguous", switch=switch, caption_weight=0.0)
    with torch.no_grad():
        m.prompt_cube.normal_(0, 1.0)
    video = torch.randn(2, 6, 3, 64, 64)
    other = video.clone()
    other[0, 1] = torch.randn(3, 64, 64)  # change frame 1 of video 0 (chunk 0)
    base, moved = _frame_embeddings(m, video), _frame_embeddings(m, other)
    delta = (moved - base).abs().amax(dim=-1)  # [B, T]
    assert delta[0, 1] > 1e-2
    if switch:
        assert delta[0, 0] > 1e-4 and delta[0, 2] > 1e-4  # the rest of the chunk sees it
    else:
        assert delta[0, 0] == 0 and delta[0, 2] == 0
    assert delta[0, 3:].max() == 0 and delta[1].max() == 0  # never another chunk or another video


def test_videos_are_chunked_alone_whatever_the_batch():
    """The official encoder regroups the flattened batch; ours never mixes videos: a video's embedding is the
    same alone and in a batch."""
    m = tiny(seed=6, num_prompts=3, caption_weight=0.0)
    randomize_new_parts(m, seed=6)
    video = torch.randn(3, 6, 3, 64, 64)
    with torch.no_grad():
        together = m.encode_video({"video": video}).pooled
        alone = torch.cat([m.encode_video({"video": video[i : i + 1]}).pooled for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)


def test_frame_count_must_be_a_multiple_of_num_prompts():
    m = tiny(num_prompts=3, caption_weight=0.0)
    with pytest.raises(ValueError, match=r"4 frames per video is not a multiple of method.num_prompts=3.*"
                                         r"data.num_frames"):
        m.encode_video({"video": torch.randn(1, 4, 3, 64, 64)})


def test_padded_frames_repeat_the_last_real_frame_and_are_left_out_of_the_mean():
    m = tiny(seed=7, num_prompts=3, caption_weight=0.0)
    randomize_new_parts(m, seed=7)
    video = torch.randn(1, 6, 3, 64, 64)
    video[0, 4:] = 0  # the loader zero-pads a 4-frame video
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    filled = video.clone()
    filled[0, 4:] = video[0, 3]
    with torch.no_grad():
        ours = m.encode_video({"video": video, "video_mask": mask}).pooled
        frames = _frame_embeddings(m, filled)
    torch.testing.assert_close(ours[0], F.normalize(frames[0, :4], dim=-1).mean(0), atol=1e-6, rtol=1e-5)
    idx_video = torch.arange(5.0).view(1, 5, 1).expand(2, 5, 1)
    idx_mask = torch.tensor([[0, 1, 1, 0, 1], [1, 0, 0, 1, 0]], dtype=torch.bool)
    assert repeat_last_real(idx_video, idx_mask)[..., 0].tolist() == [[1, 1, 2, 2, 4], [0, 0, 0, 3, 3]]


# ------------------------------------------------------------------------------------------- captioner
def official_caption_loss(m: PromptSwitch, hf_style_ids: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """The official forward_captioner + CaptionLoss on HuggingFace-style ids (padded with <eot>): a
    sequence-first decoder with the method's weights, the mask ``input_ids[:, :-1] != eot``, the class-weighted
    mean cross-entropy, times caption_loss_mult."""
    cap = m.captioner
    decoder = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(128, 2, 512, dropout=0.0), 2, norm=torch.nn.LayerNorm(128))
    decoder.load_state_dict(cap.decoder.state_dict())
    text = m.text_model.text
    inp = hf_style_ids[:, :-1]
    emb = text.token_embedding(inp) + text.positional_embedding[: inp.shape[1]]
    tgt = cap.prenorm(emb).transpose(0, 1)
    memory = cap.memory_proj(frames).transpose(0, 1)
    causal = torch.full((inp.shape[1], inp.shape[1]), float("-inf")).triu(1)
    logits = cap.head(decoder(tgt, memory, tgt_mask=causal)).transpose(0, 1)
    weight = torch.ones(49408)
    from open_clip.tokenizer import SimpleTokenizer

    weight[SimpleTokenizer().encode(FREQUENT_WORDS) + [49406, EOT]] = 0.25
    mask = inp != EOT
    return F.cross_entropy(logits[mask], hf_style_ids[:, 1:][mask], weight=weight) * 0.5


def test_caption_loss_ignores_padding_and_equals_the_official_loss():
    """Our ids are open_clip's (0-padded, padding masked by position); the official ones HuggingFace's (padded
    with <eot>, masked by value). Same loss; any padding value or length gives it; the official value mask on
    open_clip's ids would not."""
    m = tiny(seed=8, num_prompts=3)
    ids = m.tokens(["a small red circle moves left and the square grows", "a cat", "two people cook pasta"])
    ids[1, 2] = 0  # id 0 is a real token ("!"): open_clip's padding id must not be masked by value
    assert ids[1, -1] == 0 and (ids == EOT).sum() == 3
    frames, mask = torch.randn(3, 6, 64), torch.ones(3, 6, dtype=torch.bool)
    after_eot = torch.arange(ids.shape[1])[None] > ids.argmax(-1, keepdim=True)
    hf_style = torch.where(after_eot, EOT, ids)
    junk = torch.where(after_eot, torch.randint(1, 40000, ids.shape), ids)
    with torch.no_grad():
        ours = m.cfg.caption_weight * m.caption_loss(frames, mask, ids)
        ref = official_caption_loss(m, hf_style, frames)
        junk_pad = m.caption_loss(frames, mask, junk)
        longer = m.caption_loss(frames, mask, F.pad(ids, (0, 5), value=0))
        naive = value_mask_loss(m, frames, ids)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert junk_pad.item() == pytest.approx(ours.item() / 0.5, rel=1e-6)
    assert longer.item() == pytest.approx(ours.item() / 0.5, rel=1e-6)
    assert abs(naive - ours.item() / 0.5) > 1e-3


def value_mask_loss(m: PromptSwitch, frames: torch.Tensor, ids: torch.Tensor) -> float:
    """The official mask (``input != <eot>``) applied to ids padded with 0: it keeps the padding positions."""
    text = m.text_model.text
    inp = ids[:, :-1]
    hidden = m.captioner(text.token_embedding(inp) + text.positional_embedding[: inp.shape[1]], frames)
    keep = inp != EOT
    return F.cross_entropy(m.captioner.head(hidden[keep]), ids[:, 1:][keep], weight=m.caption_class_weight).item()


def test_frequent_word_ids():
    from open_clip.tokenizer import SimpleTokenizer

    m = tiny(num_prompts=2)
    low = torch.nonzero(m.caption_class_weight != 1).flatten().tolist()
    assert len(low) == 19 and (m.caption_class_weight[low] == 0.25).all()  # 17 words + <sot> + <eot>
    tok = SimpleTokenizer()
    words = sorted(tok.decoder[i].replace("</w>", "") for i in low if i < 49406)
    assert words == sorted(FREQUENT_WORDS.split()) and {49406, 49407} <= set(low)


def test_captioner_head_starts_as_the_token_embedding_loaded_before_the_first_step():
    m = tiny(seed=9, num_prompts=2).train()
    emb = m.text_model.text.token_embedding.weight
    assert torch.equal(m.captioner.head.weight, emb) and m.captioner.head.bias.abs().max() == 0
    with torch.no_grad():
        emb.add_(1.0)  # weights loaded after construction (init.checkpoint)
    batch = {"video": torch.randn(2, 2, 3, 64, 64), "text": ["a red circle", "a blue cross"]}
    m.losses(batch)
    assert torch.equal(m.captioner.head.weight, emb) and bool(m.captioner_head_copied)
    with torch.no_grad():
        emb.add_(1.0)
    m.losses(batch)  # only once: later steps train the head on its own (copied, not tied)
    assert not torch.equal(m.captioner.head.weight, emb)
    assert "captioner_head_copied" in m.state_dict()  # a resumed run does not copy again


# --------------------------------------------------------------------------------- optimizer and sizes
@pytest.mark.parametrize("aggregation_lr", ["clip", "new"])
def test_param_groups_two_learning_rates(aggregation_lr):
    m = tiny(num_prompts=2, new_lr=1e-3, aggregation_lr=aggregation_lr)
    groups = m.param_groups(1e-6, 0.2)
    names = {id(p): n for n, p in m.named_parameters()}
    seen = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(names.values())  # every parameter exactly once
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    wd_of = {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}
    assert lr_of["prompt_cube"] == 1e-3 and lr_of["captioner.head.weight"] == 1e-3
    assert lr_of["logit_scale"] == 1e-6 and lr_of["video_model.visual.conv1.weight"] == 1e-6
    assert lr_of["prompt_aggregation.in_proj_weight"] == (1e-6 if aggregation_lr == "clip" else 1e-3)
    assert wd_of["prompt_cube"] == 0.2 and wd_of["logit_scale"] == 0.0 and wd_of["captioner.head.bias"] == 0.0


def test_paper_size_parameter_counts():
    """ViT-B/32 (specs/promptswitch.md §6): CLIP 151,277,313 + cube 27,648 + aggregation 2,362,368 + captioner
    33,756,416 (decoder 8,409,088 + head 25,346,304 + prenorm 1,024)."""
    with torch.device("meta"):
        m = PromptSwitch(OmegaConf.structured(PromptSwitchConfig()))
    count = lambda prefix: sum(p.numel() for n, p in m.named_parameters() if n.startswith(prefix))  # noqa: E731
    assert count("prompt_cube") == 27_648
    assert count("prompt_aggregation.") == 2_362_368
    assert count("captioner.") == 33_756_416 and m.captioner.memory_proj is None
    assert count("captioner.decoder.") == 8_409_088 and count("captioner.head.") == 25_346_304
    assert count("") == 151_277_313 + 27_648 + 2_362_368 + 33_756_416
    assert m.cfg.num_prompts == 6 and math.isclose(m.cfg.new_lr, 1e-5) and m.cfg.caption_weight == 0.5


def test_paper_configs_load():
    from vtp_bench.config import load_config

    for name in ("promptswitch_msrvtt", "promptswitch_msvd", "promptswitch_lsmdc", "promptswitch_activitynet",
                 "clip4clip_msrvtt", "promptswitch_synth", "clip4clip_synth"):
        cfg = load_config(name)
        assert cfg.method.video.preset in ("ViT-B-32", "tiny"), name


def test_train_then_eval_with_more_test_frames(tmp_path):
    """Through the CLI: train on 2 frames (one chunk), score the test split on 4 (two chunks, data.eval_num_frames),
    the official 6 / 12 setting at CPU size; the results JSON names the frames it scored."""
    import json

    from conftest import tiny_overrides
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "data" / "synth", num_videos=20, seed=4, grounding_videos=0, progress=False)
    common = [f"data.root={tmp_path / 'data'}", "data.num_frames=2", "data.eval_num_frames=4"]
    args = ["train", "promptswitch_synth", *tiny_overrides("promptswitch"), *common, "trainer.max_steps=2",
            "optim.warmup_steps=0", f"run.dir={tmp_path / 'runs'}", "run.version=t"]
    assert main(args) == 0
    out = tmp_path / "res.json"
    ckpt = tmp_path / "runs" / "promptswitch_synth" / "t" / "checkpoints" / "last.ckpt"
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--split", "test", "--out", str(out),
                 "--data-root", str(tmp_path / "data")]) == 0
    res = json.loads(out.read_text())
    assert res["method"] == "promptswitch" and res["frames"] == 4 and res["num_videos"] == 2
    from conftest import tiny_config
    from vtp_bench.data.datamodule import VideoTextDataModule

    dm = VideoTextDataModule(tiny_config("promptswitch", *common))
    dm.setup("test")
    assert dm.test_dataloader().dataset.num_frames == 4 and dm.cfg.data.num_frames == 2
