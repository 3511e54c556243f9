"""Reference outputs of the OFFICIAL CLIP4Clip code (ArrowLuo/CLIP4Clip, modules/modeling.py ``CLIP4Clip``,
sim_header meanP, linear_patch 2d, loose_type) on tiny seeded weights, written to
tests/fixtures/official/clip4clip.json.

Usage:  PYTHONPATH=src .venv/bin/python scripts/official_refs/clip4clip_ref.py /path/to/exported/CLIP4Clip [out.json]

The official code is imported from the exported repository, never copied. Monkeypatches: stub modules for
``boto3`` / ``botocore`` / ``requests`` (imported by modules/file_utils.py for downloads only, absent here) and
``CLIP.get_config`` (which would download ViT-B/32) returning a tiny OpenAI-layout CLIP state dict made by a
throw-away build of the official ``modules.module_clip.CLIP``. The model is then built through the official
``CLIP4Clip.from_pretrained`` and every floating-point tensor overwritten with
``vtp_bench.testing.seeded_state_dict(shapes, seed=0)``.
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import torch
from fixture_io import official_repo_and_out, write_fixture

REPO, OUT = official_repo_and_out("clip4clip")
COMMIT = "508ffa3de39ba0563a03199c440ab602a72e9b6f"  # the tree these fixtures were made from


def _stub_download_deps() -> None:
    for name in ("boto3", "requests"):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
    try:
        import botocore.exceptions  # noqa: F401
    except ImportError:
        bc = types.ModuleType("botocore")
        exc = types.ModuleType("botocore.exceptions")
        exc.ClientError = type("ClientError", (Exception,), {})
        bc.exceptions = exc
        sys.modules["botocore"] = bc
        sys.modules["botocore.exceptions"] = exc


_stub_download_deps()

import modules.module_clip as module_clip  # noqa: E402  (official)
import open_clip  # noqa: E402
from modules.modeling import CLIP4Clip  # noqa: E402  (official)

from vtp_bench.testing import seeded_state_dict  # noqa: E402  (the weights the tests rebuild)

TINY = {
    "embed_dim": 64,
    "image_resolution": 64,
    "vision_layers": 2,
    "vision_width": 128,
    "vision_patch_size": 16,
    "vision_heads": 2,  # vision_width // 64 (official CLIP)
    "context_length": 77,
    "vocab_size": 49408,
    "transformer_width": 64,
    "transformer_layers": 2,
    "transformer_heads": 1,  # transformer_width // 64: what CLIP4Clip infers from the state dict (not settable)
    "max_words": 32,
    "max_frames": 12,
    "sim_header": "meanP",
    "linear_patch": "2d",
    "loose_type": True,
}
TEXTS = ["a man is cooking in a kitchen", "two dogs run on the beach", "someone plays the guitar"]
SOT, EOT = 49406, 49407


def tiny_openai_clip_state_dict() -> dict[str, torch.Tensor]:
    """A throw-away build of the official CLIP class at the tiny size: OpenAI key layout, the dims CLIP4Clip
    reads back from the keys."""
    t = TINY
    clip = module_clip.CLIP(t["embed_dim"], t["image_resolution"], t["vision_layers"], t["vision_width"],
                            t["vision_patch_size"], t["context_length"], t["vocab_size"], t["transformer_width"],
                            t["transformer_heads"], t["transformer_layers"], linear_patch="2d")
    return {k: v.clone() for k, v in clip.state_dict().items()}


def task_config() -> SimpleNamespace:
    return SimpleNamespace(max_words=TINY["max_words"], max_frames=TINY["max_frames"], loose_type=True,
                           sim_header="meanP", linear_patch="2d", cross_num_hidden_layers=4, local_rank=0,
                           pretrained_clip_name="ViT-B/32")


def clip4clip_tokens(texts):
    """The dataloader's layout ([<sot>] + tokens[:max_words-2] + [<eot>], zero padded, mask 1 on real tokens,
    segment 0) with open_clip's BPE ids."""
    full = open_clip.tokenize(texts, context_length=77)
    n = TINY["max_words"]
    ids = torch.zeros(len(texts), n, dtype=torch.long)
    mask = torch.zeros(len(texts), n, dtype=torch.long)
    for i in range(len(texts)):
        row = full[i]
        end = int(row.argmax())  # position of <eot>
        words = row[1:end].tolist()[: n - 2]
        seq = [SOT] + words + [EOT]
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask, torch.zeros_like(ids)


def main() -> None:
    torch.manual_seed(0)
    tiny_sd = tiny_openai_clip_state_dict()
    module_clip.CLIP.get_config = staticmethod(lambda pretrained_clip_name="ViT-B/32": dict(tiny_sd))

    model = CLIP4Clip.from_pretrained("cross-base", cache_dir=None, state_dict=None, task_config=task_config())
    # the constructor leaves CLIP's conv / linear / attention / projection weights in fp16 (convert_weights);
    # the fixture is float32 throughout
    half = sorted(k for k, v in model.state_dict().items() if v.dtype == torch.float16)
    model = model.float()
    clip = model.clip
    assert clip.transformer.resblocks[0].attn.num_heads == TINY["transformer_heads"]
    assert clip.visual.transformer.resblocks[0].attn.num_heads == TINY["vision_heads"]

    full = model.state_dict()
    shapes = {k: list(v.shape) for k, v in full.items() if v.is_floating_point()}
    res = model.load_state_dict(seeded_state_dict(shapes, seed=0), strict=False)
    assert not res.unexpected_keys, res.unexpected_keys
    for k in res.missing_keys:
        assert not full[k].is_floating_point(), f"float key not loaded: {k}"
    print("missing (integer buffers):", res.missing_keys)
    model.eval()

    video = torch.randn(2, 12, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    video_mask = torch.ones(2, 12, dtype=torch.long)
    input_ids, input_mask, segment_ids = clip4clip_tokens(TEXTS)

    with torch.no_grad():
        # the test loop's shapes: text [B, 1, max_words], video [B, 1, 1, T, 3, H, W], mask [B, 1, T]
        seq = model.get_sequence_output(input_ids[:, None], segment_ids[:, None], input_mask[:, None])
        vis = model.get_visual_output(video[:, None, None], video_mask[:, None])
        logits, _ = model.get_similarity_logits(seq, vis, input_mask[:, None], video_mask[:, None],
                                                loose_type=model.loose_type)
        assert model.loose_type is True
        scale = float(model.clip.logit_scale.detach().exp())
        t = seq.squeeze(1) / seq.squeeze(1).norm(dim=-1, keepdim=True)
        v = vis / vis.norm(dim=-1, keepdim=True)
        v = v.mean(1)
        v = v / v.norm(dim=-1, keepdim=True)
        recon = float((scale * t @ v.t() - logits).abs().max())
    print("seq", tuple(seq.shape), "vis", tuple(vis.shape), "logits", tuple(logits.shape), "scale", scale,
          "recon max|diff|", recon)
    print("fp16 after construction:", len(half), "tensors")

    fixture = {
        "source": {"repo": f"ArrowLuo/CLIP4Clip@{COMMIT}", "file": "modules/modeling.py",
                   "class": "CLIP4Clip (CLIP from modules/module_clip.py)"},
        "config": TINY,
        "keys": shapes,
        "seed": 0,
        "inputs": {
            "video_seed": 1,
            "video_shape": list(video.shape),
            "video_note": "torch.randn(2, 12, 3, 64, 64, generator=torch.Generator().manual_seed(1)), already "
                          "CLIP-normalised; fed as [2, 1, 1, 12, 3, 64, 64]",
            "video_mask": video_mask.tolist(),
            "texts": TEXTS,
            "input_ids": input_ids.tolist(),
            "input_mask": input_mask.tolist(),
            "segment_ids": segment_ids.tolist(),
        },
        "outputs": {
            "sequence_output": seq.squeeze(1).tolist(),
            "visual_output": vis.tolist(),
            "similarity_logits": logits.tolist(),
            "logit_scale_exp": scale,
            "logit_scale": float(model.clip.logit_scale.detach()),
        },
        "notes": {
            "sequence_output": "get_sequence_output: projected ln_final state at the argmax (<eot>) position, "
                               "unnormalised; official shape [3, 1, 64], stored squeezed [3, 64]",
            "visual_output": "get_visual_output: ln_post(CLS) @ proj per frame, unnormalised [2, 12, 64]",
            "similarity_logits": "get_similarity_logits(loose_type=True), meanP: frames L2-normalised, masked "
                                 "mean, renormalised; text L2-normalised; logit_scale.exp() * text @ video.T [3, 2]",
            "fp16": "the official constructor calls convert_weights(self.clip): conv/linear/MHA weights and "
                    "text_projection/visual.proj are fp16 until .float(); this fixture was run in float32",
            "text_heads": "transformer_heads = transformer_width // 64 (= 1 here) is inferred, not configurable",
        },
    }
    write_fixture(OUT, fixture)


if __name__ == "__main__":
    main()
