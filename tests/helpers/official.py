"""Independent computations of the released models, and files in their layouts, for the checks that our models
load official checkpoints and reproduce the official numbers (tests of the space-time ViT, checkpoints, MILES,
RegionLearner, region inputs).

- Frozen-in-Time's SpaceTimeTransformer (specs/miles.md §1.1): ``reference_forward`` is written from the spec's
  pseudo-code only: it reads the weights from the state dict by their official names and recomputes everything
  with explicit maths (unfold-and-matmul patch embedding, LayerNorm and GELU by formula, explicit softmax attention
  with a loop over groups); ``official_keys_and_shapes`` is the official key layout.
- A FrozenInTime checkpoint as the official trainer saves it (``official_frozen_state``), the official embeddings
  of it (``official_embeddings``) and our Frozen at the same size (``our_frozen``; ``VIDEO``, ``TEXT_CFG``).
- Region features as bottom-up-attention writes them (``official_npz``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import OmegaConf

from vtp_bench.methods.frozen import Frozen, FrozenConfig


# ---------------------------------------------------------------------------------- SpaceTimeTransformer, from the spec
def _ln(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _linear(x, w, b):
    return x @ w.T + b


def _softmax_attend(q, k, v):
    """q [B, Lq, H, c], k/v [B, Lk, H, c] -> [B, Lq, H, c] with an explicit softmax."""
    scores = torch.einsum("bqhc,bkhc->bhqk", q, k)
    scores = scores - scores.amax(-1, keepdim=True)
    probs = scores.exp() / scores.exp().sum(-1, keepdim=True)
    return torch.einsum("bhqk,bkhc->bqhc", probs, v)


def _ref_attention(x, sd, prefix, heads, frames, mode):
    b, n, d = x.shape
    c = d // heads
    p = (n - 1) // frames
    qkv = _linear(x, sd[f"{prefix}.qkv.weight"], sd[f"{prefix}.qkv.bias"])
    q, k, v = (qkv[..., i * d : (i + 1) * d].reshape(b, n, heads, c) for i in range(3))  # official chunk(3)
    q = q * c**-0.5
    out = torch.zeros_like(q)
    out[:, :1] = _softmax_attend(q[:, :1], k, v)  # the CLS query attends to every token
    if mode == "space":  # one group per frame: that frame's patches
        groups = [[1 + f * p + j for j in range(p)] for f in range(frames)]
    else:  # one group per spatial position: that position in every frame
        groups = [[1 + f * p + j for f in range(frames)] for j in range(p)]
    for idx in groups:
        keys = [0] + idx  # each patch query also sees the CLS key/value
        out[:, idx] = _softmax_attend(q[:, idx], k[:, keys], v[:, keys])
    return _linear(out.reshape(b, n, d), sd[f"{prefix}.proj.weight"], sd[f"{prefix}.proj.bias"])


def reference_forward(sd, video, heads, patch, depth, time_residual=False):
    """Official SpaceTimeTransformer.forward_features up to the final norm (all tokens)."""
    b, f, ch, hh, ww = video.shape
    w = sd["patch_embed.proj.weight"]
    d = w.shape[0]
    frames = []
    for i in range(f):  # patchify by reshape, row-major over the grid, then a matmul
        img = video[:, i].reshape(b, ch, hh // patch, patch, ww // patch, patch)
        cols = img.permute(0, 2, 4, 1, 3, 5).reshape(b, (hh // patch) * (ww // patch), ch * patch * patch)
        frames.append(cols @ w.reshape(d, -1).T + sd["patch_embed.proj.bias"])
    x = torch.cat([sd["cls_token"].expand(b, 1, d)] + frames, dim=1)
    pos = [sd["pos_embed"][:, :1]] + [sd["pos_embed"][:, 1:] + sd["temporal_embed"][:, i : i + 1] for i in range(f)]
    x = x + torch.cat(pos, dim=1)
    for i in range(depth):
        g = lambda name: (sd[f"blocks.{i}.{name}.weight"], sd[f"blocks.{i}.{name}.bias"])  # noqa: E731
        t = _ref_attention(_ln(x, *g("norm3")), sd, f"blocks.{i}.timeattn", heads, f, "time")
        s = _ref_attention(_ln(x + t, *g("norm1")), sd, f"blocks.{i}.attn", heads, f, "space")
        x = x + s + (t if time_residual else 0.0)
        x = x + _linear(_gelu(_linear(_ln(x, *g("norm2")), *g("mlp.fc1"))), *g("mlp.fc2"))
    return _ln(x, sd["norm.weight"], sd["norm.bias"])


OFFICIAL_BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "timeattn.qkv", "timeattn.proj", "norm2", "mlp.fc1",
                        "mlp.fc2", "norm3")


def official_keys_and_shapes(depth, d, p, frames, patch, mlp):
    """From the spec: video_model.{cls_token,pos_embed,temporal_embed,patch_embed.proj.*,blocks.{i}.{...}.*,norm.*}"""
    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, p + 1, d), "temporal_embed": (1, frames, d),
              "patch_embed.proj.weight": (d, 3, patch, patch), "patch_embed.proj.bias": (d,),
              "norm.weight": (d,), "norm.bias": (d,)}
    part = {"norm1": (d, d), "norm2": (d, d), "norm3": (d, d), "attn.qkv": (3 * d, d), "attn.proj": (d, d),
            "timeattn.qkv": (3 * d, d), "timeattn.proj": (d, d), "mlp.fc1": (mlp, d), "mlp.fc2": (d, mlp)}
    for i in range(depth):
        for name in OFFICIAL_BLOCK_PARTS:
            out, inp = part[name]
            norm = name.startswith("norm")
            shapes[f"blocks.{i}.{name}.weight"] = (out,) if norm else (out, inp)
            shapes[f"blocks.{i}.{name}.bias"] = (out,)
    return shapes


# -------------------------------------------------------------------------------------------- a FrozenInTime checkpoint
# the tiny size of these checks: the video tower (SpaceTimeViT arguments) and the text model (HuggingFace config)
VIDEO = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4)
TEXT_CFG = {"model_type": "distilbert", "vocab_size": 30522, "dim": 32, "n_layers": 2, "n_heads": 2,
            "hidden_dim": 64, "max_position_embeddings": 64}


def official_frozen_state(frames=4, seed=0, text_proj_name="txt_proj", text_cfg=TEXT_CFG):
    """A FrozenInTime state dict as the official trainer saves it: random values under the official names,
    the text model being HuggingFace's DistilBertModel, everything under DataParallel's ``module.``."""
    from transformers import DistilBertConfig, DistilBertModel

    g = torch.Generator().manual_seed(seed)
    shapes = official_keys_and_shapes(depth=2, d=48, p=16, frames=frames, patch=8, mlp=192)
    video = {k: 0.2 * torch.randn(s, generator=g) + (1.0 if k.endswith("norm1.weight") else 0.0)
             for k, s in shapes.items()}
    torch.manual_seed(seed)
    bert = DistilBertModel(DistilBertConfig(**{k: v for k, v in text_cfg.items() if k != "model_type"})).eval()
    with torch.no_grad():
        for p in bert.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sd = {f"module.video_model.{k}": v for k, v in video.items()}
    sd.update({f"module.text_model.{k}": v for k, v in bert.state_dict().items()})
    sd[f"module.{text_proj_name}.1.weight"] = 0.1 * torch.randn(24, text_cfg["dim"], generator=g)
    sd[f"module.{text_proj_name}.1.bias"] = 0.1 * torch.randn(24, generator=g)
    sd["module.vid_proj.0.weight"] = 0.1 * torch.randn(24, 48, generator=g)
    sd["module.vid_proj.0.bias"] = 0.1 * torch.randn(24, generator=g)
    return sd, video, bert


def official_embeddings(sd, video, bert, tokens, clip, text_proj_name="txt_proj"):
    """FrozenInTime.compute_video / compute_text, written from the spec (miles.md §1.1)."""
    feat = reference_forward(video, clip, heads=4, patch=8, depth=2)[:, 0]
    v = feat @ sd["module.vid_proj.0.weight"].T + sd["module.vid_proj.0.bias"]
    cls = bert(**tokens).last_hidden_state[:, 0]
    t = cls.relu() @ sd[f"module.{text_proj_name}.1.weight"].T + sd[f"module.{text_proj_name}.1.bias"]
    return v, t


def our_frozen(num_frames=4):
    """Our Frozen at the size of ``official_frozen_state`` (eval mode), to load it into."""
    cfg = OmegaConf.structured(FrozenConfig(
        video={"name": "space_time_vit", **VIDEO, "num_frames": num_frames},
        text={"name": "hf_text", "config": TEXT_CFG}, embed_dim=24,
    ))
    return Frozen(cfg).eval()


# -------------------------------------------------------------------------------------------- region features (DemoVLP)
def official_npz(path, n: int, seed: int, h: int = 360, w: int = 640) -> dict:
    """What bottom-up-attention's save_roi_features writes (info is a pickled dict)."""
    rng = np.random.default_rng(seed)
    x1y1 = rng.uniform(0, [w / 2, h / 2], (n, 2))
    bbox = np.concatenate([x1y1, x1y1 + rng.uniform(5, [w / 2, h / 2], (n, 2))], 1).astype(np.float32)
    info = {"image_id": str(seed), "image_h": h, "image_w": w, "num_boxes": n, "objects_id": rng.integers(0, 1600, n),
            "objects_conf": rng.random(n).astype(np.float32), "attrs_id": rng.integers(0, 400, n),
            "attrs_conf": rng.random(n).astype(np.float32)}
    x = rng.standard_normal((n, 2048)).astype(np.float32)
    np.savez_compressed(path, x=x, bbox=bbox, num_bbox=n, image_h=h, image_w=w, info=info)
    return {"x": x, "bbox": bbox, "conf": info["objects_conf"], "h": h, "w": w}
