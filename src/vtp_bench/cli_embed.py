"""``vtp-bench embed`` (a split's embeddings to one file) and ``vtp-bench search`` (top-k videos for a query)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vtp_bench.cli_args import add_checkpoint_args, at_least, checkpoint_overrides
from vtp_bench.quiet import status


def cmd_embed(args: argparse.Namespace) -> None:
    status(f"loading {args.ckpt} (the code, the model and its weights) ...")
    from vtp_bench.distributed import is_launch_rank_zero
    from vtp_bench.embed import export_embeddings, paths

    meta = export_embeddings(args.ckpt, args.dataset, args.out, split=args.split, allow_missing=args.allow_missing,
                             overrides=checkpoint_overrides(args), trust_checkpoint=args.trust_checkpoint,
                             accelerator=args.accelerator, devices=args.devices, ckpt_source=args.ckpt_source,
                             method=args.method, experiment=args.experiment, name=args.name,
                             overwrite=args.overwrite)
    if meta is None or not is_launch_rank_zero():
        return
    tensors, sidecar = meta.get("files") or paths(args.out)
    m = meta["eval"]["metrics"]
    print(f"{len(meta['video_ids'])} videos, {len(meta['text_ids'])} texts of {meta['dataset']}/{meta['split']} "
          f"(t2v R@1 {m['t2v/R@1']:.1f}, scored by {meta['similarity']})")
    if meta["num_missing"]:
        print(f"note: {meta['num_missing']} videos were missing or unreadable and were left out")
    print(f"embeddings written to {tensors}\nsidecar written to {sidecar}")


def _load_module(args: argparse.Namespace, meta: dict[str, Any]) -> Any:
    """The model that made the gallery, so the query is encoded (and scored) as the gallery was."""
    from vtp_bench.embed import EmbeddingsError
    from vtp_bench.evaluate import module_from_checkpoint, sha256_of

    ckpt = Path(args.ckpt or meta["checkpoint"])
    if not ckpt.is_file():
        raise EmbeddingsError(f"checkpoint {ckpt} (the gallery's) does not exist; pass the same checkpoint with --ckpt")
    if sha256_of(ckpt) != meta["checkpoint_sha256"]:
        raise EmbeddingsError(f"{ckpt} is not the checkpoint that made the gallery ({meta['checkpoint']}, sha256 "
                              f"{meta['checkpoint_sha256'][:12]}...): queries would be encoded by another model; pass "
                              "that checkpoint, or re-export the gallery with `vtp-bench embed`")
    load = meta.get("load", {})
    status(f"loading the gallery's model from {ckpt} to encode the queries ...")
    module = module_from_checkpoint(ckpt, list(load.get("overrides", [])) + list(args.overrides),
                                    args.trust_checkpoint, load.get("ckpt_source"), load.get("method"),
                                    load.get("experiment"))
    return module.eval()


def _query(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty query matches nothing in particular: give the words to search for")
    return text


def _positive(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"{k}: give how many videos to return, 1 or more")
    return k


def cmd_search(args: argparse.Namespace) -> None:
    status(f"loading the gallery {args.index} ...")
    import torch

    from vtp_bench.embed import load_embeddings, paths
    from vtp_bench.search import FaissParams, check_faiss_fits, exact_topk, faiss_topk, gallery_faiss, normalised

    emb = load_embeddings(args.index)
    module = _load_module(args, emb.meta)
    with torch.no_grad():
        query = module.method.encode_text({"text": list(args.query)}).detach().to("cpu")
    if args.faiss:
        check_faiss_fits(emb)
        params = FaissParams(nlist=args.nlist, nprobe=args.nprobe, m=args.hnsw_m, ef_search=args.ef_search)
        index, where, built = gallery_faiss(emb, paths(args.index)[0], args.faiss, params)
        if built and not args.json:
            print(f"faiss index ({args.faiss}) written to {where}")
        scores, rows = faiss_topk(index, normalised(query.pooled), args.k, params)
        scores, rows = scores.tolist(), rows.tolist()
    else:
        s, r = exact_topk(module.method, query, emb.video, args.k)
        scores, rows = s.tolist(), r.tolist()
    ids = emb.video_ids
    hits = [[{"video_id": ids[i], "score": float(sc)} for sc, i in zip(srow, rrow) if i >= 0]
            for srow, rrow in zip(scores, rows)]
    if args.json:
        print(json.dumps([{"query": q, "hits": h} for q, h in zip(args.query, hits)], indent=2))
        return
    for q, h in zip(args.query, hits):
        print(f"query: {q}")
        for rank, hit in enumerate(h, 1):
            print(f"  {rank:>3}  {hit['score']:+.4f}  {hit['video_id']}")


def add_embed_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("embed", help="write a split's video and text embeddings (safetensors + JSON sidecar)")
    add_checkpoint_args(s, "embed")
    s.add_argument("--out", required=True, help="FILE.safetensors (FILE.json, the sidecar, is written next to it); "
                   "an existing file is refused before the export runs unless --overwrite, and if another run "
                   "writes it meanwhile, this pair goes to FILE.<n>.safetensors / .json beside it")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out pair")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("search", help="top-k videos of an exported gallery for a text query")
    s.add_argument("--index", required=True, help="the FILE.safetensors written by `vtp-bench embed`")
    s.add_argument("--ckpt", default=None, help="the checkpoint that made the gallery (default: the one its sidecar "
                   "names); it encodes the query, and a different file is refused")
    s.add_argument("--query", "-q", required=True, action="append", type=_query,
                   help="a text query (repeat for several)")
    s.add_argument("-k", type=_positive, default=10, help="how many videos (10)")
    s.add_argument("--faiss", choices=["flat", "ivf", "hnsw"], default=None,
                   help="search a faiss index (pip install faiss-cpu) instead of the exact scan: flat = exact inner "
                        "product, ivf / hnsw = approximate, for millions of videos; pooled-cosine methods only")
    s.add_argument("--nlist", type=at_least(0), default=0, help="ivf: k-means cells (0: sqrt(N), 1000 at 1M)")
    s.add_argument("--nprobe", type=at_least(1), default=32, help="ivf: cells searched per query (32)")
    s.add_argument("--hnsw-m", type=at_least(2), default=32, help="hnsw: links per node (32)")
    s.add_argument("--ef-search", type=at_least(1), default=128, help="hnsw: search breadth (128)")
    s.add_argument("--json", action="store_true", help="print the hits as JSON")
    s.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary unpickling (trusted files only)")
    s.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides of the model (rarely needed)")
    s.set_defaults(func=cmd_search)
