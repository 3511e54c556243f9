"""Reference outputs of the OFFICIAL Prompt Switch code (bladewaltz1/PromptSwitch, model/prompt_clip.py
``PromptCLIP``) on tiny seeded weights, written to tests/fixtures/official/promptswitch.json.

Usage:  PYTHONPATH=src .venv/bin/python scripts/official_refs/promptswitch_ref.py /path/to/PromptSwitch [out.json]

The official code is imported from the exported repository, never copied. The only monkeypatches replace the
hub downloads (``CLIPConfig.from_pretrained`` / ``CLIPModel.from_pretrained``) by a tiny config built here and
a randomly initialised model; every floating-point tensor is then overwritten with
``vtp_bench.testing.seeded_state_dict(shapes, seed=0)``.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from fixture_io import official_repo_and_out, write_fixture

REPO, OUT = official_repo_and_out("promptswitch")
COMMIT = "6420d3f3099569fd7aaf5455cdb5fe2e9eb55a4b"  # the tree these fixtures were made from

import model.prompt_clip as pc  # noqa: E402  (official)
import open_clip  # noqa: E402
from modules.metrics import sim_matrix_training  # noqa: E402  (official)
from transformers.models.clip import CLIPConfig as HFCLIPConfig  # noqa: E402

from vtp_bench.testing import seeded_state_dict  # noqa: E402  (the weights the tests rebuild)

TINY = {
    "vision": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512,
               "patch_size": 16, "image_size": 64, "hidden_act": "quick_gelu"},
    "text": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256,
             "vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
    "projection_dim": 64,
    "num_prompts": 6,
    "num_frames": 6,
    "num_test_frames": 12,
    "loss": "clip+caption",
    "num_captioner_layers": 2,
    "pooling_type": "avg",
    "pooling_type_test": "avg",
    "input_res": 64,
}
TEXTS = ["a man is cooking in a kitchen", "two dogs run on the beach", "someone plays the guitar"]
EOT = 49407


def tiny_clip_config() -> HFCLIPConfig:
    # transformers 4.26 (the version the official code was written for) had dropout=0.0 on both towers; newer
    # versions dropped the field, which PromptCLIP reads for its caption decoder (inactive in eval anyway)
    return HFCLIPConfig(text_config=dict(TINY["text"], dropout=0.0), vision_config=dict(TINY["vision"], dropout=0.0),
                        projection_dim=TINY["projection_dim"])


class _ConfigShim:
    @staticmethod
    def from_pretrained(*_a, **_k):
        return tiny_clip_config()


def _model_from_pretrained(_name, config=None, **_k):
    return pc.CLIPModel(config)


def official_config() -> SimpleNamespace:
    """The attributes of config/base_config.py that PromptCLIP and BaselinePooling read."""
    return SimpleNamespace(
        num_frames=TINY["num_frames"], num_test_frames=TINY["num_test_frames"], num_prompts=TINY["num_prompts"],
        input_res=TINY["input_res"], loss=TINY["loss"], num_captioner_layers=TINY["num_captioner_layers"],
        pooling_type=TINY["pooling_type"], pooling_type_test=TINY["pooling_type_test"],
        k=-1, attention_temperature=0.01, num_samples=2, num_mha_heads=1, transformer_dropout=0.3, embed_dim=64,
        arch="prompt_clip",
    )


def float_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items() if v.is_floating_point()}


def hf_tokens(texts):
    """open_clip ids, each row cut after its <eot> and padded with <eot> to the longest row (HF CLIPTokenizer
    with padding=True, as the official trainer calls it)."""
    ids = open_clip.tokenize(texts, context_length=77)
    lens = (ids.argmax(dim=-1) + 1).tolist()
    L = max(lens)
    input_ids = torch.full((len(texts), L), EOT, dtype=torch.long)
    mask = torch.zeros((len(texts), L), dtype=torch.long)
    for i, n in enumerate(lens):
        input_ids[i, :n] = ids[i, :n]
        mask[i, :n] = 1
    return input_ids, mask


def main() -> None:
    torch.manual_seed(0)
    pc.CLIPConfig = _ConfigShim
    pc.CLIPModel.from_pretrained = staticmethod(_model_from_pretrained)

    cfg = official_config()
    model = pc.PromptCLIP(cfg)  # built while self.training is True -> vision num_frames = cfg.num_frames (6)
    assert model.clip.vision_model.nf == cfg.num_frames == 6
    model = model.float()

    shapes = float_shapes(model)
    sd = seeded_state_dict(shapes, seed=0)
    res = model.load_state_dict(sd, strict=False)
    assert not res.unexpected_keys, res.unexpected_keys
    full = model.state_dict()
    for k in res.missing_keys:
        assert not full[k].is_floating_point(), f"float key not loaded: {k}"
    print("missing (integer buffers):", res.missing_keys)
    model.eval()

    video = torch.randn(2, 12, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    input_ids, attention_mask = hf_tokens(TEXTS)

    with torch.no_grad():
        text_features = model.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        frames = video.reshape(-1, 3, 64, 64)
        frame_features = model.clip.get_image_features(frames)
        out = model({"video": video, "text": {"input_ids": input_ids, "attention_mask": attention_mask}},
                    return_all_frames=True)

        # the 12 test frames go through a model built for 6: chunks of 6 consecutive frames are independent
        chunk_diffs = []
        for b in range(2):
            for c in range(2):
                alone = model.clip.get_image_features(video[b, 6 * c:6 * c + 6])
                got = frame_features[12 * b + 6 * c:12 * b + 6 * c + 6]
                chunk_diffs.append(float((alone - got).abs().max()))
        # ... and frames do interact inside a chunk: perturbing frame 0 changes frame 1 but not frame 6
        v2 = video.clone()
        v2[0, 0] += 1.0
        ff2 = model.clip.get_image_features(v2.reshape(-1, 3, 64, 64))
        d = (ff2 - frame_features).abs().amax(dim=-1)
        intra_chunk_effect = float(d[1:6].max())
        cross_chunk_effect = float(d[6:].max())

        # for comparison: the same weights with the vision tower set up for 12 frames (not what the official
        # model does at test time)
        vm = model.clip.vision_model
        vm.nf = vm.encoder.nf = 12
        for layer in vm.encoder.layers:
            layer.nf = 12
        ff12 = model.clip.get_image_features(frames)
        nf12_max_abs_diff = float((ff12 - frame_features).abs().max())
        vm.nf = vm.encoder.nf = 6
        for layer in vm.encoder.layers:
            layer.nf = 6

    # the official retrieval score: cosine of text and re-normalised pooled video (logit_scale only enters the loss)
    sims = sim_matrix_training(out["text_features"], out["video_features_pooled"], cfg.pooling_type_test)
    norm_pooled = out["video_features_pooled"].norm(dim=-1).tolist()
    pooled_ref = (frame_features / frame_features.norm(dim=-1, keepdim=True)).reshape(2, 12, -1).mean(1)
    print("chunk independence max|diff|:", chunk_diffs)
    print("intra-chunk effect", intra_chunk_effect, "cross-chunk effect", cross_chunk_effect)
    print("nf=12 build vs nf=6 build frame feature max|diff|:", nf12_max_abs_diff)
    print("pooled norms:", norm_pooled, "pooled == mean(normalised frames):",
          float((pooled_ref - out["video_features_pooled"]).abs().max()))
    assert max(chunk_diffs) < 1e-5 and cross_chunk_effect == 0.0 and intra_chunk_effect > 1e-4

    fixture = {
        "source": {"repo": f"bladewaltz1/PromptSwitch@{COMMIT}", "file": "model/prompt_clip.py",
                   "class": "PromptCLIP (CLIPModel from the same file)"},
        "config": TINY,
        "keys": shapes,
        "seed": 0,
        "inputs": {
            "video_seed": 1,
            "video_shape": list(video.shape),
            "video_note": "torch.randn(2, 12, 3, 64, 64, generator=torch.Generator().manual_seed(1)), "
                          "already CLIP-normalised",
            "texts": TEXTS,
            "input_ids": input_ids.tolist(),
            "attention_mask": attention_mask.tolist(),
        },
        "outputs": {
            "text_features": text_features.tolist(),
            "frame_features": frame_features.tolist(),
            "video_features_pooled": out["video_features_pooled"].tolist(),
            "text_features_normalized": out["text_features"].tolist(),
            "sims": sims.tolist(),
            "logit_scale": float(model.clip.logit_scale.detach()),
        },
        "notes": {
            "text_features": "clip.get_text_features(input_ids, attention_mask), unnormalised [3, 64]",
            "frame_features": "clip.get_image_features(video.reshape(-1, 3, 64, 64)), unnormalised [24, 64], "
                              "rows in the order fed (video 0 frames 0-11, then video 1)",
            "video_features_pooled": "PromptCLIP.forward (eval, pooling_type_test avg): mean over the 12 "
                                     "L2-normalised frame features, NOT renormalised [2, 64]",
            "sims": "modules/metrics.py sim_matrix_training(text_features, video_features_pooled, 'avg'): both "
                    "L2-normalised, text @ video.T [3, 2], no logit_scale (exp(logit_scale) multiplies it in the "
                    "loss only)",
            "text_features_normalized": "PromptCLIP.forward output 'text_features' (L2-normalised) [3, 64]",
            "frame_chunking": "built with num_frames=6 (self.training is True in __init__), so at test time the "
                              "24 frames are read as 4 clips of 6 consecutive frames: frames 0-5 and 6-11 of "
                              "each video are independent chunks",
            "chunk_independence_max_abs_diff": max(chunk_diffs),
            "nf12_build_frame_features_max_abs_diff": nf12_max_abs_diff,
        },
    }
    write_fixture(OUT, fixture)


if __name__ == "__main__":
    main()
