"""Released files in the official layouts load through ``load_official`` and give the official code's outputs.

``tests/fixtures/official/<method>.json`` was written by ``scripts/official_refs/<method>_ref.py``, which builds
the official model at a tiny size (its own constructor, in a throw-away copy of the official repository), fills
its state dict with ``seeded_state_dict(keys, seed)`` and records its outputs on fixed inputs. Here the same names
and seed give the same file; it is saved as the official trainer saves it and loaded into our model, whose
outputs must equal the recorded ones (to 1e-5: float32, different kernels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from vtp_bench.methods.clip4clip import Clip4Clip, Clip4ClipConfig
from vtp_bench.methods.promptswitch import PromptSwitch, PromptSwitchConfig
from vtp_bench.models.checkpoints import CheckpointError, load_official
from vtp_bench.testing import seeded_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "official"
ATOL = 1e-5


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def official_file(ref: dict, path: Path, wrap: bool = True) -> Path:
    sd = seeded_state_dict(ref["keys"], ref["seed"])
    torch.save({"state_dict": sd, "epoch": 3} if wrap else sd, path)
    return path


def fixture_video(ref: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(ref["inputs"]["video_seed"])
    return torch.randn(*ref["inputs"]["video_shape"], generator=g)


def clip_model(vision: dict, text: dict, embed_dim: int) -> dict:
    """An open_clip model config for the official tower sizes."""
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": vision["image_size"], "layers": vision["layers"], "width": vision["width"],
                           "patch_size": vision["patch_size"], "head_width": vision["width"] // vision["heads"],
                           "mlp_ratio": vision["mlp"] / vision["width"]},
            "text_cfg": {"context_length": text["context"], "vocab_size": text["vocab"], "width": text["width"],
                         "heads": text["heads"], "layers": text["layers"], "mlp_ratio": text["mlp"] / text["width"]}}


# ------------------------------------------------------------------------------------------- Prompt Switch
def promptswitch_from(ref: dict) -> PromptSwitch:
    c = ref["config"]
    v, t = c["vision"], c["text"]
    model = clip_model({"image_size": v["image_size"], "layers": v["num_hidden_layers"], "width": v["hidden_size"],
                        "patch_size": v["patch_size"], "heads": v["num_attention_heads"],
                        "mlp": v["intermediate_size"]},
                       {"context": t["max_position_embeddings"], "vocab": t["vocab_size"], "width": t["hidden_size"],
                        "heads": t["num_attention_heads"], "layers": t["num_hidden_layers"],
                        "mlp": t["intermediate_size"]}, c["projection_dim"])
    cfg = PromptSwitchConfig(video={"name": "clip_vit", "model": model}, text={"name": "clip_text", "model": model},
                             num_prompts=c["num_prompts"], chunking="contiguous", pixel_norm="imagenet", max_words=77,
                             captioner_layers=c["num_captioner_layers"])
    return PromptSwitch(OmegaConf.structured(cfg)).eval()


def test_official_promptswitch_file_loads_strictly_and_gives_the_official_outputs(tmp_path):
    ref = fixture("promptswitch")
    method = promptswitch_from(ref)
    report = load_official(method, official_file(ref, tmp_path / "model_best.pth"))  # detected, strict
    assert report.source == "promptswitch" and not report.ignored and not report.untouched
    out = ref["outputs"]
    video = fixture_video(ref)
    with torch.no_grad():
        frames = method.encode_frames(video, None)[0].frames  # contiguous chunks: frames stay in order
        text = method.encode_text({"text": ref["inputs"]["texts"]}).pooled
        pooled = method.encode_video({"video": video}).pooled
        sims = method.similarity(method.encode_text({"text": ref["inputs"]["texts"]}), method.encode_video(
            {"video": video}))
    torch.testing.assert_close(frames.flatten(0, 1), torch.tensor(out["frame_features"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(text, torch.tensor(out["text_features"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(pooled, torch.tensor(out["video_features_pooled"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(sims, torch.tensor(out["sims"]), atol=ATOL, rtol=0)
    assert method.logit_scale.item() == pytest.approx(out["logit_scale"], abs=1e-7)
    sd = seeded_state_dict(ref["keys"], ref["seed"])  # the parts of its own: the same tensors, not just shapes
    torch.testing.assert_close(method.prompt_cube.data, sd["clip.vision_model.encoder.prompt_embedding"])
    torch.testing.assert_close(method.captioner.head.weight.data, sd["caption_head.weight"])
    assert method.captioner_head_copied  # so training does not copy the token embedding over the loaded head
    assert torch.equal(method.captioner.decoder.layers[1].multihead_attn.in_proj_weight,
                       sd["caption_transformer.layers.1.multihead_attn.in_proj_weight"])


def test_promptswitch_file_loaded_keeps_its_captioner_head_when_training_starts(tmp_path):
    """The official captioner head is initialised from the token embedding at construction only; a loaded file's
    trained head must not be overwritten by that copy at the first step."""
    ref = fixture("promptswitch")
    method = promptswitch_from(ref)
    load_official(method, official_file(ref, tmp_path / "m.pth"))
    head = method.captioner.head.weight.detach().clone()
    method.train()
    video = fixture_video(ref)[:, :6]
    method.losses({"video": video, "text": ref["inputs"]["texts"][:2]})
    assert torch.equal(method.captioner.head.weight, head)


def test_promptswitch_layout_refuses_a_transformer_pooling_head(tmp_path):
    ref = fixture("promptswitch")
    sd = seeded_state_dict(ref["keys"], ref["seed"])
    sd["pool_frames.linear.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match="pooling_type transformer"):
        load_official(promptswitch_from(ref), {"state_dict": sd})


# ------------------------------------------------------------------------------------------------ CLIP4Clip
def clip4clip_from(ref: dict) -> Clip4Clip:
    c = ref["config"]
    model = clip_model({"image_size": c["image_resolution"], "layers": c["vision_layers"], "width": c["vision_width"],
                        "patch_size": c["vision_patch_size"], "heads": c["vision_heads"], "mlp": 4 * c["vision_width"]},
                       {"context": c["context_length"], "vocab": c["vocab_size"], "width": c["transformer_width"],
                        "heads": c["transformer_heads"], "layers": c["transformer_layers"],
                        "mlp": 4 * c["transformer_width"]}, c["embed_dim"])
    cfg = Clip4ClipConfig(video={"name": "clip_vit", "model": model}, text={"name": "clip_text", "model": model},
                          max_words=c["max_words"], pixel_norm="imagenet")
    return Clip4Clip(OmegaConf.structured(cfg)).eval()


def test_official_clip4clip_file_loads_and_gives_the_official_outputs(tmp_path):
    ref = fixture("clip4clip")
    method = clip4clip_from(ref)
    # CLIP4Clip saves model.state_dict() as pytorch_model.bin.<epoch>, unwrapped; its towers are fp16 there
    sd = {k: (v.half() if v.ndim == 2 else v) for k, v in seeded_state_dict(ref["keys"], ref["seed"]).items()}
    torch.save(sd, tmp_path / "pytorch_model.bin.4")
    report = load_official(method, tmp_path / "pytorch_model.bin.4")
    assert report.source == "clip4clip" and not report.ignored and not report.untouched
    method.float()
    load_official(method, official_file(ref, tmp_path / "f32.bin", wrap=False))  # the float32 numbers recorded
    out = ref["outputs"]
    video = fixture_video(ref).reshape(-1, *ref["inputs"]["video_shape"][-4:])  # [2, 12, 3, 64, 64]
    with torch.no_grad():
        frames = method.video_model(method.pixels(video)).frames
        text = method.text_model(method.tokens(ref["inputs"]["texts"])).pooled
        sim = method.similarity(method.encode_text({"text": ref["inputs"]["texts"]}), method.encode_video(
            {"video": video}))
    torch.testing.assert_close(frames, torch.tensor(out["visual_output"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(text, torch.tensor(out["sequence_output"]), atol=ATOL, rtol=0)
    scale = method.logit_scale.exp().item()
    assert scale == pytest.approx(out["logit_scale_exp"], rel=1e-6)
    torch.testing.assert_close(sim * scale, torch.tensor(out["similarity_logits"]), atol=ATOL, rtol=0)


def test_clip4clip_file_with_a_sequence_head_is_refused_by_name(tmp_path):
    ref = fixture("clip4clip")
    sd = seeded_state_dict(ref["keys"], ref["seed"])
    sd["frame_position_embeddings.weight"] = torch.zeros(12, 64)
    with pytest.raises(CheckpointError, match="seqTransf"):
        load_official(clip4clip_from(ref), sd)


def test_clip4clip_tokens_equal_the_official_ids():
    """The text side's input: our tokenizer's ids (cut to max_words) are the official ones, position by position."""
    ref = fixture("clip4clip")
    ids = clip4clip_from(ref).tokens(ref["inputs"]["texts"])
    official = torch.tensor(ref["inputs"]["input_ids"]).reshape(ids.shape[0], -1)  # zero-padded to max_words
    assert torch.equal(ids, official[:, : ids.shape[1]]) and not official[:, ids.shape[1]:].any()


def test_a_clip_tower_alone_takes_its_part_of_an_official_promptswitch_file(tmp_path):
    from vtp_bench.models.video.clip_vit import ClipViT

    ref = fixture("promptswitch")
    method = promptswitch_from(ref)
    path = official_file(ref, tmp_path / "m.pth")
    vit = ClipViT(model=method.cfg.video["model"], weights=str(path)).eval()
    report_keys = {k for k in vit.state_dict()}
    assert all(torch.equal(vit.state_dict()[k], method.video_model.state_dict()[k]) for k in report_keys) is False
    load_official(method, path)
    assert all(torch.equal(vit.state_dict()[k], method.video_model.state_dict()[k]) for k in report_keys)
    with torch.no_grad():  # no prompts: plain CLIP frames, the same as the method's tower without its hook
        video = F.normalize(fixture_video(ref)[:1, :2], dim=-1)
        torch.testing.assert_close(vit(video).frames, method.video_model(video).frames)


# ------------------------------------------------------------------------------------------ vtp-bench eval
@pytest.mark.parametrize("name", ["clip4clip", "promptswitch"])
def test_cli_scores_an_official_file_of_the_method(tmp_path, capsys, name):
    """``vtp-bench eval --ckpt <released file> --experiment <yaml>``: detected, loaded strictly, scored; the results
    JSON names the layout and its load report."""
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic

    ref = fixture(name)
    method = clip4clip_from(ref) if name == "clip4clip" else promptswitch_from(ref)
    ckpt = official_file(ref, tmp_path / "released.pth", wrap=name == "promptswitch")
    generate_synthetic(tmp_path / "data" / "synth", num_videos=8, seed=0, grounding_videos=1, progress=False)
    exp = {"method": OmegaConf.to_container(method.cfg), "data": {"train": ["synth"], "eval": ["synth"],
           "num_frames": 12, "img_size": 64, "eval_batch_size": 4, "num_workers": 0}}
    (tmp_path / f"{name}_official.yaml").write_text(OmegaConf.to_yaml(exp))
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(ckpt), "--experiment", str(tmp_path / f"{name}_official.yaml"), "--dataset",
                 "synth", "--data-root", str(tmp_path / "data"), "--accelerator", "cpu", "--out", str(out)]) == 0
    assert f"from a {name} checkpoint" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["checkpoint_source"] == name and result["checkpoint_load"]["ignored"] == []
    assert result["checkpoint_load"]["untouched"] == [] and result["num_queries"] > 0


# -------------------------------------------------------------------------------------------------- DemoVLP
def test_official_demovlp_whole_checkpoint_loads_and_gives_the_official_outputs(tmp_path):
    """The released DemoVLP file (``module.``-prefixed ObjectRelation: object transformer, DistilBERT, txt_proj;
    no pixel tower) loads whole and strictly, and the global, local and summed scores are the official ones."""
    from vtp_bench.methods.demovlp import DemoVLP, DemoVLPConfig

    ref = fixture("demovlp")
    o, t = ref["config"]["object_transformer"], ref["config"]["text"]
    video = {"name": "object_transformer", **{k: o[k] for k in ("feat_dim", "embed_dim", "depth", "num_heads",
                                                                 "num_regions", "num_frames", "output_dim")}}
    text = {"name": "hf_text", "preset": "tiny", "max_length": t["max_length"], "padding": "max_length"}
    method = DemoVLP(OmegaConf.structured(DemoVLPConfig(video=video, text=text, embed_dim=ref["config"]["embed_dim"],
                                                        lam=ref["config"]["lam"]))).eval()
    report = load_official(method, official_file(ref, tmp_path / "demovlp_webvid_cc3m.pth"))
    assert report.source == "demovlp" and not report.ignored and not report.untouched
    inp, out = ref["inputs"], ref["outputs"]
    batch = {"region_feats": torch.tensor(inp["region_feats"]), "region_boxes": torch.tensor(inp["region_boxes"]),
             "region_mask": torch.tensor(inp["region_mask"]).bool(), "text": inp["texts"]}
    with torch.no_grad():
        v, tx = method.encode_video(batch), method.encode_text(batch)
        sim = method.similarity(tx, v)
        local = method.local_scores(v, tx)
    torch.testing.assert_close(tx.pooled, torch.tensor(out["global_text"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(v.pooled, torch.tensor(out["global_video"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(v.tokens, torch.tensor(out["region_tokens"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(tx.tokens, torch.tensor(out["word_tokens"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(local.double(), torch.tensor(out["local_sim_video_text"], dtype=torch.float64),
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(sim.double(), torch.tensor(out["similarity_text_video"], dtype=torch.float64),
                               atol=ATOL, rtol=0)


def test_cli_scores_an_official_demovlp_file_on_region_features(tmp_path, capsys):
    """``vtp-bench eval --method demovlp``-style scoring of the released file: region features from detector files
    (the official ``.npz`` layout), no pixels."""
    import numpy as np

    from vtp_bench.cli import main
    from vtp_bench.data.manifest import ManifestRow, write_manifest

    ref = fixture("demovlp")
    o, t = dict(ref["config"]["object_transformer"], feat_dim=2048), ref["config"]["text"]  # detector features
    ref["keys"]["module.object_model.object_embedding.weight"] = [o["embed_dim"], 2048]
    videos = ["a", "b", "c"]
    root = tmp_path / "data"
    for split in ("train", "val", "test"):
        write_manifest(root / "mine" / f"{split}.jsonl",
                       [ManifestRow(v, f"videos/{v}.mp4", f"a person does thing {v}", f"{v}_0", split) for v in videos])
    (root / "mine" / "videos").mkdir()  # the manifest's video folder (the files are not read: no pixels)
    rng = np.random.default_rng(0)
    for v in videos:
        (root / "mine" / "feats" / v).mkdir(parents=True)
        for k in range(4):
            xy = rng.uniform(0, 100, (6, 2))
            np.savez(root / "mine" / "feats" / v / f"{k}.npz", x=rng.standard_normal((6, o["feat_dim"])).astype("f4"),
                     bbox=np.concatenate([xy, xy + 50], 1).astype("f4"), num_bbox=6, image_h=360, image_w=640,
                     info={"objects_conf": rng.random(6).astype("f4")})
    exp = {"method": {"name": "demovlp", "video": {"name": "object_transformer", **{k: o[k] for k in (
        "feat_dim", "embed_dim", "depth", "num_heads", "num_regions", "num_frames", "output_dim")}},
        "text": {"name": "hf_text", "preset": "tiny", "max_length": t["max_length"], "padding": "max_length"},
        "embed_dim": ref["config"]["embed_dim"]},
        "data": {"train": ["mine"], "eval": ["mine"], "num_frames": 4, "num_regions": o["num_regions"],
                 "regions": {"mine": f"{root}/mine/feats/{{video_id}}"}, "eval_batch_size": 2, "num_workers": 0}}
    (tmp_path / "demovlp_official.yaml").write_text(OmegaConf.to_yaml(exp))
    ckpt = official_file(ref, tmp_path / "demovlp.pth")
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(ckpt), "--experiment", str(tmp_path / "demovlp_official.yaml"), "--dataset",
                 str(root / "mine" / "test.jsonl"), "--accelerator", "cpu", "--out", str(out)]) == 0
    assert "from a demovlp checkpoint" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["checkpoint_source"] == "demovlp" and result["num_queries"] == 3
    assert result["checkpoint_load"]["ignored"] == [] and result["checkpoint_load"]["untouched"] == []


def test_cli_method_flag_scores_a_clip4clip_file(tmp_path, capsys):
    """``--method clip4clip`` with size overrides: a ``clip.*`` file of the tiny preset, detected and scored."""
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic

    cfg = Clip4ClipConfig(video={"name": "clip_vit", "preset": "tiny"}, text={"name": "clip_text", "preset": "tiny"})
    ours = Clip4Clip(OmegaConf.structured(cfg))
    sd = {"clip.logit_scale": torch.tensor(3.0)}
    sd.update({f"clip.{k[len('video_model.'):]}": v for k, v in ours.state_dict().items()
               if k.startswith("video_model.")})
    sd.update({f"clip.{k[len('text_model.text.'):]}": v for k, v in ours.state_dict().items()
               if k.startswith("text_model.text.")})
    torch.save(sd, tmp_path / "pytorch_model.bin.0")
    generate_synthetic(tmp_path / "data" / "synth", num_videos=8, seed=0, grounding_videos=1, progress=False)
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(tmp_path / "pytorch_model.bin.0"), "--method", "clip4clip", "--dataset", "synth",
                 "--data-root", str(tmp_path / "data"), "--out", str(out), "--accelerator", "cpu",
                 "method.video.preset=tiny", "method.text.preset=tiny", "data.img_size=64", "data.num_frames=2",
                 "data.num_workers=0"]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint_source"] == "clip4clip" and result["checkpoint_load"]["untouched"] == []
    assert "loaded" in capsys.readouterr().out
