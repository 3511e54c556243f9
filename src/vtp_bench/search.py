"""``vtp-bench search``: the top-k videos of an exported gallery (``vtp-bench embed``) for a text query.

- Exact (default): the method's own ``similarity`` of the query against every video, in chunks, so any method is
  exact, including those that score with local tokens (LocVTP clip-word, DemoVLP region-word).
- faiss (``--faiss flat|ivf|hnsw``, extra ``search``: ``pip install faiss-cpu``), for methods that score by the
  cosine of pooled embeddings only: ``flat`` is exact inner product on normalised vectors (IndexFlatIP); ``ivf``
  (IndexIVFFlat: ``nlist`` k-means cells, ``nprobe`` of them searched) and ``hnsw`` (IndexHNSWFlat: ``M`` links,
  ``ef_search``) are approximate, for galleries of millions; their recall against the exact search is measured by
  ``scripts/bench_search.py`` (docs/benchmarks.md). A built index is saved next to the gallery and reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vtp_bench.atomic import atomic_path
from vtp_bench.embed import EmbeddingFile, EmbeddingsError
from vtp_bench.methods.base import Embeddings, Method

FAISS_KINDS = ("flat", "ivf", "hnsw")


@dataclass
class FaissParams:
    """``nlist`` (ivf; 0: sqrt(N), at most N/39 so every cell gets faiss's minimum of 39 training points),
    ``nprobe`` (ivf, cells searched), ``m`` / ``ef_construction`` / ``ef_search`` (hnsw)."""

    nlist: int = 0
    nprobe: int = 32
    m: int = 32
    ef_construction: int = 80
    ef_search: int = 128

    def cells(self, n: int) -> int:
        return self.nlist or max(1, min(round(math.sqrt(n)), n // 39))


@torch.no_grad()
def exact_topk(method: Method, query: Embeddings, video: Embeddings, k: int, chunk: int = 65536
               ) -> tuple[Tensor, Tensor]:
    """[Q, k] scores and video rows by the method's own ``similarity``, over chunks of the gallery (a running
    top-k: memory Q x chunk, never Q x N)."""
    k = min(k, len(video))
    best_s = torch.empty(len(query), 0)
    best_i = torch.empty(len(query), 0, dtype=torch.long)
    for a in range(0, len(video), chunk):
        s = method.similarity(query, video.index(slice(a, a + chunk))).float().cpu()
        s_all = torch.cat([best_s, s], dim=1)
        i_all = torch.cat([best_i, torch.arange(a, a + s.shape[1]).expand(len(query), -1)], dim=1)
        top = s_all.topk(min(k, s_all.shape[1]), dim=1)
        best_s, best_i = top.values, i_all.gather(1, top.indices)
    return best_s, best_i


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise EmbeddingsError("--faiss needs the faiss library: pip install faiss-cpu (or: pip install "
                              "'vtp_bench[search]'); the exact search (no --faiss) needs nothing else") from None
    return faiss


def normalised(x: Tensor) -> np.ndarray:
    """Rows L2-normalised as contiguous fp32 (faiss's inner product on these is the cosine)."""
    x = torch.nn.functional.normalize(x.float(), dim=-1, eps=1e-8)
    return np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)


def build_faiss(vectors: np.ndarray, kind: str, params: FaissParams = FaissParams(), seed: int = 0) -> Any:
    """An inner-product faiss index over normalised ``vectors`` [N, D] fp32."""
    faiss = import_faiss()
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = params.cells(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))]
        index.cp.seed = seed
        index.train(sample)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
    else:
        raise EmbeddingsError(f"--faiss must be one of {FAISS_KINDS}, got {kind!r}")
    index.add(vectors)
    return index


def faiss_topk(index: Any, queries: np.ndarray, k: int, params: FaissParams = FaissParams()
               ) -> tuple[np.ndarray, np.ndarray]:
    """[Q, k] scores and rows; the search-time knobs (``nprobe``, ``ef_search``) are set on the index first."""
    if hasattr(index, "nprobe"):
        index.nprobe = params.nprobe
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(params.ef_search, k)
    return index.search(queries, min(k, index.ntotal))


def faiss_path(gallery: Path, kind: str, params: FaissParams, n: int) -> Path:
    """Where the index of a gallery is kept: its build parameters in the name, so other parameters rebuild."""
    tag = {"flat": "flat", "ivf": f"ivf{params.cells(n)}", "hnsw": f"hnsw{params.m}-{params.ef_construction}"}[kind]
    return gallery.with_suffix(f".{tag}.faiss")


def gallery_faiss(emb: EmbeddingFile, gallery: Path, kind: str, params: FaissParams) -> tuple[Any, Path, bool]:
    """(index, its file, whether it was built now): read when the saved one is newer than the gallery."""
    faiss = import_faiss()
    path = faiss_path(gallery, kind, params, len(emb.video))
    if path.is_file() and path.stat().st_mtime >= gallery.stat().st_mtime:
        return faiss.read_index(str(path)), path, False
    index = build_faiss(normalised(emb.video.pooled), kind, params)
    with atomic_path(path) as tmp:  # a torn index would be read back next time (it is newer than the gallery)
        faiss.write_index(index, str(tmp))
    return index, path, True


def check_faiss_fits(emb: EmbeddingFile) -> None:
    if emb.meta.get("similarity") != "pooled_cosine":
        raise EmbeddingsError(
            f"method {emb.meta.get('method')!r} scores with its own similarity (local tokens, not the cosine of "
            "pooled embeddings), which an inner-product faiss index cannot hold: search without --faiss (exact, "
            "the method's own score)"
        )
