"""Official checkpoints into our models: files written in the official key layout, embeddings compared with an
independent computation of the official model (explicit maths for the video tower, HuggingFace's own
DistilBERT / CLIP classes, open_clip's own forward)."""

from __future__ import annotations

import json
import sys
import types
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from helpers.clip import hf_tiny_clip, open_clip_tiny
from helpers.official import VIDEO, official_embeddings, official_frozen_state, our_frozen, reference_forward
from vtp_bench.methods.frozen import Frozen, FrozenConfig
from vtp_bench.models.checkpoints import (
    CheckpointError,
    detect_source,
    inflate_temporal_embed,
    load_checkpoint,
    load_official,
)
from vtp_bench.models.clip_common import TINY_CLIP, hf_clip_to_open_clip
from vtp_bench.models.layouts import CheckpointTarget, LayoutMap
from vtp_bench.models.text.clip_text import ClipText
from vtp_bench.models.video.clip_vit import ClipViT
from vtp_bench.models.video.space_time_vit import SpaceTimeViT

TEXTS = ["a dog runs across the park", "two people cook pasta", "red car"]


# --------------------------------------------------------------------------------- Frozen / MILES layout
@pytest.mark.parametrize("text_proj_name", ["txt_proj", "text_proj"])  # Frozen / RegionLearner vs MCQ / MILES
def test_frozen_checkpoint_reproduces_official_embeddings(tmp_path, text_proj_name):
    sd, video, bert = official_frozen_state(text_proj_name=text_proj_name)
    path = tmp_path / "model_best.pth"
    torch.save({"state_dict": sd, "epoch": 3, "monitor_best": 0.5}, path)
    ours = our_frozen()
    report = load_official(ours, path)  # source detected
    assert report.source == "frozen" and not report.untouched and not report.ignored
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        tokens = ours.text_model.tokenize(TEXTS)
        ref_v, ref_t = official_embeddings(sd, video, bert, dict(tokens), clip, text_proj_name)
        v = ours.encode_video({"video": clip}).pooled
        t = ours.encode_text({"text": TEXTS}).pooled
    assert (v - ref_v).abs().max() < 1e-5 and (t - ref_t).abs().max() < 1e-5
    assert ref_v.abs().max() > 0.1 and ref_t.abs().max() > 0.1  # non-trivial embeddings


def test_frozen_checkpoint_into_single_towers():
    sd, video, bert = official_frozen_state(seed=1)
    vit = SpaceTimeViT(**VIDEO, num_frames=4).eval()
    report = load_official(vit, sd, source="miles")
    assert report.source == "frozen" and any(k.startswith("text_model.") for k in report.ignored)
    clip = torch.randn(1, 3, 3, 32, 32)  # fewer frames than the model's 4
    with torch.no_grad():
        ref = reference_forward(video, clip, heads=4, patch=8, depth=2)
        torch.testing.assert_close(vit(clip).tokens, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fix", ["zeros", "interp", "bilinear"])
def test_temporal_embed_inflation_from_fewer_frames(fix):
    sd, video, _ = official_frozen_state(frames=2, seed=2)
    e0, e1 = video["temporal_embed"][0]
    ours = our_frozen(num_frames=4)
    report = load_official(ours, sd, temporal_fix=fix)
    assert report.notes and "2 frames" in report.notes[0]
    expected = {  # Frozen's _inflate_positional_embeds: zero padding, or F.interpolate over [1, 1, F, D]
        "zeros": [e0, e1, torch.zeros_like(e0), torch.zeros_like(e0)],
        "interp": [e0, e0, e1, e1],
        "bilinear": [e0, 0.75 * e0 + 0.25 * e1, 0.25 * e0 + 0.75 * e1, e1],  # align_corners=False, clamped
    }[fix]
    torch.testing.assert_close(ours.video_model.temporal_embed[0], torch.stack(expected), atol=1e-6, rtol=0)
    if fix == "zeros":  # the first two frames see exactly the checkpoint's model
        clip = torch.randn(2, 2, 3, 32, 32)
        with torch.no_grad():
            ref = reference_forward(video, clip, heads=4, patch=8, depth=2)[:, 0]
            torch.testing.assert_close(ours.video_model(clip).pooled, ref, atol=1e-5, rtol=1e-5)


def test_temporal_embed_from_more_frames_is_truncated():
    embed = torch.randn(1, 8, 5)
    torch.testing.assert_close(inflate_temporal_embed(embed, 4), embed[:, :4])
    with pytest.raises(ValueError, match="temporal_fix"):
        inflate_temporal_embed(embed[:, :2], 4, "cubic")


class ConfigParser:  # stands for Frozen's parse_config.ConfigParser, pickled into every official checkpoint
    def __init__(self):
        self.config = {"arch": "FrozenInTime"}


def test_pickled_objects_refused_unless_trusted(tmp_path, monkeypatch):
    sd, _, _ = official_frozen_state(seed=3)
    fake = types.ModuleType("parse_config")  # the official repo's module, importable only while saving
    fake.ConfigParser = ConfigParser
    monkeypatch.setattr(ConfigParser, "__module__", "parse_config")
    monkeypatch.setitem(sys.modules, "parse_config", fake)
    torch.save({"state_dict": sd, "config": ConfigParser()}, tmp_path / "ckpt.pth")
    monkeypatch.delitem(sys.modules, "parse_config")
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as e:
        load_checkpoint(tmp_path / "ckpt.pth")
    assert "parse_config.ConfigParser" in str(e.value) and "\x1b[" not in str(e.value)  # names it, no ANSI
    (tmp_path / "cut.pth").write_bytes((tmp_path / "ckpt.pth").read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="complete PyTorch checkpoint"):  # not an unpickling question
        load_checkpoint(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_official(our_frozen(), tmp_path / "ckpt.pth")
    report = load_official(our_frozen(), tmp_path / "ckpt.pth", trust=True)  # the class becomes an inert stub
    assert report.source == "frozen" and not report.untouched


def test_wrong_checkpoints_are_named():
    sd, _, _ = official_frozen_state(seed=4)
    ours = our_frozen()
    partial = {k: v for k, v in sd.items() if "blocks.1.mlp" not in k}
    with pytest.raises(CheckpointError, match="lacks 4 of the model's keys"):
        load_official(ours, partial)
    extra = {**sd, "module.video_model.quantizer.codebook": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="no place"):
        load_official(ours, extra)
    assert "video_model.quantizer.codebook" in load_official(ours, extra, strict=False).ignored
    with pytest.raises(CheckpointError, match="shapes"):
        load_official(our_frozen(), {**sd, "module.vid_proj.0.bias": torch.zeros(7)})
    with pytest.raises(CheckpointError, match="source"):
        detect_source({"foo.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unknown checkpoint source"):
        load_official(ours, sd, source="videomae")


# ------------------------------------------------------------------------------------------------- CLIP
def test_hf_clip_weights_reproduce_hf_embeddings(tmp_path):
    hf = hf_tiny_clip()
    path = tmp_path / "pytorch_model.bin"
    torch.save(hf.state_dict(), path)
    vit = ClipViT.preset("tiny", weights=str(path)).eval()
    txt = ClipText.preset("tiny", weights=str(path)).eval()
    video = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        ids = txt.tokenize(TEXTS)
        ours_v, ours_t = vit(video).frames, txt(ids).pooled
        ref_v = hf.visual_projection(hf.vision_model(pixel_values=video.flatten(0, 1)).pooler_output)
        ref_t = hf.text_projection(hf.text_model(input_ids=ids).pooler_output)
    assert (ours_v.flatten(0, 1) - ref_v).abs().max() < 1e-5
    assert (ours_t - ref_t).abs().max() < 1e-5 and ref_t.abs().max() > 0.1


def test_hf_clip_safetensors_and_logit_scale(tmp_path):
    from safetensors.torch import save_file

    hf = hf_tiny_clip(seed=1)
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "model.safetensors")

    class Pair(CheckpointTarget, torch.nn.Module):  # what a CLIP-based method holds, and declares
        def __init__(self):
            super().__init__()
            self.video_encoder = ClipViT.preset("tiny")
            self.text_encoder = ClipText.preset("tiny")
            self.logit_scale = torch.nn.Parameter(torch.zeros(()))

        def checkpoint_prefixes(self, layout):
            towers = {**{s: f"video_encoder.{d}" for s, d in self.video_encoder.checkpoint_prefixes(layout).prefixes
                         .items()}, **{s: f"text_encoder.{d}" for s, d in self.text_encoder.checkpoint_prefixes(layout)
                                       .prefixes.items()}}
            return LayoutMap({**towers, "logit_scale": "logit_scale"})

    pair = Pair()
    report = load_official(pair, tmp_path / "model.safetensors")
    assert report.source == "hf_clip" and not report.untouched and not report.ignored
    assert pair.logit_scale.item() == pytest.approx(hf.logit_scale.item())


def _open_clip_reference(model, video, ids):
    with torch.no_grad():
        return model.encode_image(video.flatten(0, 1)), model.encode_text(ids)


def _as_openai_torchscript(model, path):
    """A TorchScript archive with OpenAI's state-dict layout (open_clip keys plus three int buffers)."""

    class Scripted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in model.named_children():
                setattr(self, name, child)
            for name in ("positional_embedding", "text_projection", "logit_scale"):
                setattr(self, name, getattr(model, name))
            for name, value in (("input_resolution", 64), ("context_length", 77), ("vocab_size", 49408)):
                self.register_buffer(name, torch.tensor(value))

        def forward(self, x):
            return x * self.logit_scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Scripted(), torch.ones(1), check_trace=False).save(str(path))


@pytest.mark.parametrize("fmt", ["openai_torchscript", "open_clip_state_dict"])
def test_openai_and_open_clip_weights_reproduce_open_clip(tmp_path, fmt):
    model = open_clip_tiny(seed=2)
    path = tmp_path / "ViT-tiny.pt"
    if fmt == "openai_torchscript":
        _as_openai_torchscript(model, path)
        assert detect_source(load_checkpoint(path)) == "openai"
    else:
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    vit, txt = ClipViT.preset("tiny", weights=str(path)).eval(), ClipText.preset("tiny", weights=str(path)).eval()
    video = torch.randn(2, 2, 3, 64, 64)
    ids = txt.tokenize(TEXTS)
    ref_v, ref_t = _open_clip_reference(model, video, ids)
    with torch.no_grad():
        assert (vit(video).frames.flatten(0, 1) - ref_v).abs().max() < 1e-5
        assert (txt(ids).pooled - ref_t).abs().max() < 1e-5


def test_hf_conversion_names_every_key():
    sd = hf_clip_to_open_clip(hf_tiny_clip(seed=3).state_dict())
    from open_clip.model import CLIP

    assert set(sd) == set(CLIP(**TINY_CLIP).state_dict())
    with pytest.raises(CheckpointError, match="no open_clip counterpart"):
        hf_clip_to_open_clip({"vision_model.encoder.layers.0.self_attn.rope.weight": torch.zeros(1)})


# ------------------------------------------------------------------------------------ vtp-bench eval --ckpt
def test_cli_eval_scores_an_official_checkpoint(tmp_path, capsys):
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic
    from vtp_bench.models.text.hf_text import HFTextEncoder

    generate_synthetic(tmp_path / "data" / "synth", num_videos=8, seed=0, grounding_videos=1, progress=False)
    sd, _, _ = official_frozen_state(seed=5, text_cfg=HFTextEncoder.PRESETS["tiny"]["config"])
    ckpt = tmp_path / "frozen_official.pth"
    torch.save({"state_dict": sd, "epoch": 1}, ckpt)
    size = ["method.video.img_size=32", "method.video.patch_size=8", "method.video.embed_dim=48",
            "method.video.depth=2", "method.video.num_heads=4", "method.text.preset=tiny", "method.embed_dim=24",
            "data.img_size=32", "data.num_workers=0", "data.eval_batch_size=4", "trainer.accelerator=cpu"]
    common = ["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(tmp_path / "data"),
              "--accelerator", "cpu"]
    assert main(common + ["--out", str(tmp_path / "r.json"), "--method", "frozen", *size]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["checkpoint_source"] == "frozen" and result["method"] == "frozen" and result["metrics"]
    capsys.readouterr()
    assert main(common + ["--ckpt-source", "hf_clip", "--method", "frozen", *size]) == 2  # wrong source named
    assert "hf_clip' was given, but the keys are those of a 'frozen" in capsys.readouterr().err
    assert main(common + size) == 2  # a released checkpoint needs --method or --experiment
    assert "--method NAME or --experiment NAME" in capsys.readouterr().err


def test_regionlearner_file_needs_non_strict_and_reports_what_it_left(tmp_path, capsys):
    """RegionLearner's released weights carry its quantizer under video_model: scoring them with the Frozen
    architecture (as the official loader does with strict=False) must list those keys, not drop them silently."""
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic
    from vtp_bench.models.text.hf_text import HFTextEncoder

    generate_synthetic(tmp_path / "data" / "synth", num_videos=8, seed=0, grounding_videos=1, progress=False)
    sd, _, _ = official_frozen_state(seed=6, text_cfg=HFTextEncoder.PRESETS["tiny"]["config"])
    sd["module.video_model.RegionLearner.quantizer.embed"] = torch.randn(16, 48)
    ckpt = tmp_path / "regionlearner.pth"
    torch.save({"state_dict": sd}, ckpt)
    size = ["method.video.img_size=32", "method.video.patch_size=8", "method.video.embed_dim=48",
            "method.video.depth=2", "method.video.num_heads=4", "method.text.preset=tiny", "method.embed_dim=24",
            "data.img_size=32", "data.num_workers=0", "data.eval_batch_size=4"]
    cmd = ["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(tmp_path / "data"), "--accelerator",
           "cpu", "--method", "frozen", "--out", str(tmp_path / "r.json"), *size]
    assert main(cmd) == 2
    assert "--ckpt-non-strict" in capsys.readouterr().err
    assert main(cmd + ["--ckpt-non-strict"]) == 0
    assert "checkpoint keys not used: 1: video_model.RegionLearner.quantizer.embed" in capsys.readouterr().out
    load = json.loads((tmp_path / "r.json").read_text())["checkpoint_load"]
    assert load["ignored"] == ["video_model.RegionLearner.quantizer.embed"] and load["untouched"] == []


def test_a_tower_the_method_lacks_is_an_error_not_a_silent_drop():
    sd, _, _ = official_frozen_state(seed=7)
    cfg = OmegaConf.structured(FrozenConfig(video={"name": "space_time_vit", **VIDEO, "num_frames": 4},
                                            text={"name": "clip_text", "preset": "tiny"}, embed_dim=24))
    method = Frozen(cfg)
    with pytest.raises(CheckpointError, match="no tower for .*text_model"):
        load_official(method, sd)
    with pytest.raises(CheckpointError, match="txt_proj.1.weight"):  # non-strict loads the rest, which misfits
        load_official(method, sd, strict=False)


def test_training_starts_from_an_official_checkpoint_with_fewer_frames(tmp_path):
    """init.checkpoint: a 2-frame Frozen file into a 4-frame model (Frozen's fine-tuning protocol); with lr 0
    the trained weights are the file's, temporal_embed zero-padded as Frozen's loader does."""
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic
    from vtp_bench.models.text.hf_text import HFTextEncoder

    generate_synthetic(tmp_path / "data" / "synth", num_videos=12, seed=0, grounding_videos=0, progress=False)
    sd, video, _ = official_frozen_state(frames=2, seed=8, text_cfg=HFTextEncoder.PRESETS["tiny"]["config"])
    ckpt = tmp_path / "frozen_2f.pth"
    torch.save({"state_dict": sd}, ckpt)
    args = ["train", "frozen_synth", "method.video.img_size=32", "method.video.patch_size=8",
            "method.video.embed_dim=48", "method.video.depth=2", "method.video.num_heads=4",
            "method.video.num_frames=4",
            "method.text.preset=tiny", "method.text.freeze=false", "method.embed_dim=24", "data.img_size=32",
            "data.num_frames=4", "data.num_workers=0", "data.batch_size=4", "trainer.accelerator=cpu",
            "trainer.max_steps=1", "trainer.enable_progress_bar=false", "optim.lr=0", "optim.warmup_steps=0",
            "optim.scheduler=constant", f"data.root={tmp_path / 'data'}", f"run.dir={tmp_path / 'runs'}",
            "run.version=init", f"init.checkpoint={ckpt}"]
    assert main(args) == 0
    run = tmp_path / "runs" / "frozen_synth" / "init"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["init"]["source"] == "frozen" and "fitted with zeros" in summary["init"]["notes"][0]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    temporal = state["method.video_model.temporal_embed"]
    assert torch.equal(temporal[:, :2], video["temporal_embed"]) and not temporal[:, 2:].any()
    assert torch.equal(state["method.video_model.blocks.1.attn.qkv.weight"], video["blocks.1.attn.qkv.weight"])
    assert torch.equal(state["method.txt_proj.1.weight"], sd["module.txt_proj.1.weight"])
    # a vtp_bench checkpoint starts another run as well (MILES stage 2 from our own pre-training): layout vtp_bench
    again = [a for a in args if not a.startswith(("run.version=", "init.checkpoint="))]
    assert main([*again, "run.version=again", f"init.checkpoint={run / 'checkpoints' / 'last.ckpt'}"]) == 0
    second = tmp_path / "runs" / "frozen_synth" / "again"
    assert json.loads((second / "summary.json").read_text())["init"]["source"] == "vtp_bench"
    state2 = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state2.keys() == state.keys() and all(torch.equal(state2[k], state[k]) for k in state)
