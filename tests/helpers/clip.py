"""CLIP at its tiny size (``vtp_bench.models.clip_common.TINY_CLIP``) from the libraries the released CLIP
checkpoints come from (HuggingFace ``transformers``, ``open_clip``), our CLIP towers at the same size, and Prompt
Switch's Prompt Cube computed with explicit loops: the independent references of the CLIP-based checks (CLIP
towers, checkpoints, CLIP4Clip, Prompt Switch)."""

from __future__ import annotations

import torch

from vtp_bench.models.clip_common import TINY_CLIP

# our CLIP towers at TINY_CLIP's size: the ``video`` and ``text`` of a CLIP-based method's config
TINY_CLIP_TOWERS = {"video": {"name": "clip_vit", "preset": "tiny"}, "text": {"name": "clip_text", "preset": "tiny"}}


def hf_tiny_clip(seed=0):
    """HuggingFace's own CLIPModel at ``TINY_CLIP``'s size, its weights moved off their init (eval mode)."""
    from transformers import CLIPConfig, CLIPModel

    v, t = TINY_CLIP["vision_cfg"], TINY_CLIP["text_cfg"]
    cfg = CLIPConfig(
        vision_config=dict(hidden_size=v["width"], num_hidden_layers=v["layers"], num_attention_heads=2,
                           intermediate_size=4 * v["width"], image_size=v["image_size"], patch_size=v["patch_size"],
                           hidden_act="quick_gelu"),
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"], num_hidden_layers=t["layers"],
                         num_attention_heads=t["heads"], intermediate_size=4 * t["width"],
                         max_position_embeddings=t["context_length"], hidden_act="quick_gelu",
                         eos_token_id=49407, bos_token_id=49406, pad_token_id=0),
        projection_dim=TINY_CLIP["embed_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def open_clip_tiny(seed=0):
    """open_clip's own CLIP at ``TINY_CLIP``'s size (QuickGELU, as OpenAI's), its weights moved off their init."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**TINY_CLIP, quick_gelu=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def prompt_cube_reference(model, video, cube):
    """specs/promptswitch.md §3.2-3.3 with explicit loops over frames and open_clip's own attention module."""
    v = model.visual
    b, t = video.shape[:2]
    n = cube.shape[0]
    x = v._embeds(video.flatten(0, 1)).reshape(b, t, 17, -1)
    x = torch.cat([x, torch.stack([cube[f % n] for f in range(t)])[None].expand(b, -1, -1, -1)], dim=2)
    for blk in v.transformer.resblocks:
        h = blk.ln_1(x)
        s = h.clone()
        for f in range(t):
            for j in range(n):  # the attention input at (frame f, slot j) is LN(h[frame j, slot f]) in f's chunk
                c = f // n
                s[:, f, 17 + j] = h[:, c * n + j, 17 + f % n]
        flat = s.flatten(0, 1)
        x = x + blk.attn(flat, flat, flat, need_weights=False)[0].reshape(x.shape)
        x = x + blk.mlp(blk.ln_2(x))
    return x
