"""``vtp-bench embed``: a checkpoint's video and text embeddings of one dataset split, in one file.

The export runs the evaluation itself (``evaluate.evaluate`` with the retrieval task): the same clips, sampler,
transforms, sharding and gathering, and the very ``Embeddings`` that ``Retrieval.score`` ranks, so R@K computed
from the file equals ``vtp-bench eval``'s on the same checkpoint and split. Format (docs/embeddings.md):

- ``FILE.safetensors``: ``video.pooled`` [N_video, D] (and ``video.tokens`` [N_video, L, D'] / ``video.mask``
  [N_video, L] bool / ``video.extra.<name>`` when the method has them), the same under ``text.``, and
  ``text_to_video`` [N_text] int64 (the row of each caption's video). Dtypes are the model's (fp32 by default).
- ``FILE.json`` (the sidecar): ids in row order, the protocol, the checkpoint and manifest with their sha256, and
  whether the method scores by the cosine of pooled embeddings (then any inner-product index serves) or by its own
  ``similarity`` (token-level: then only ``vtp-bench search``'s exact path, which loads the method, is exact).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from vtp_bench import __version__
from vtp_bench.errors import ConfigError
from vtp_bench.methods.base import Embeddings, Method
from vtp_bench.tasks.base import Scorer
from vtp_bench.tasks.retrieval import Retrieval

FORMAT = "vtp_bench.embeddings/1"
SIDES = ("video", "text")


class EmbeddingsError(ConfigError):
    """An embeddings file that cannot be used: names the file and the fix."""


class _KeepingScorer:
    """The module as the task sees it, keeping the text embeddings the task asks for."""

    def __init__(self, scorer: Scorer) -> None:
        self.method, self.device, self._scorer = scorer.method, scorer.device, scorer
        self.text: Embeddings | None = None

    def encode_texts(self, texts: list[str], batch_size: int) -> Embeddings:
        self.text = self._scorer.encode_texts(texts, batch_size)
        return self.text


class KeepingRetrieval(Retrieval):
    """The retrieval task, unchanged, that also keeps what it scored: the clips, the texts and the set."""

    kept: tuple[Embeddings, Embeddings, Any] | None = None
    pooled_cosine: bool = True

    def score(self, scorer: Scorer, clips: Embeddings, eset: Any, cfg: Any) -> tuple[dict[str, float], dict[str, Any]]:
        keeping = _KeepingScorer(scorer)
        metrics, info = super().score(keeping, clips, eset, cfg)  # type: ignore[arg-type]
        assert keeping.text is not None
        self.kept = (clips, keeping.text, eset)
        self.pooled_cosine = scores_by_pooled_cosine(scorer.method)
        return metrics, info


def scores_by_pooled_cosine(method: Method) -> bool:
    """True when the method's score is the cosine of the pooled embeddings (``Method.similarity`` not overridden):
    then normalised ``video.pooled`` in any inner-product index (faiss) ranks exactly as the method does."""
    return type(method).similarity is Method.similarity


def flatten(side: str, emb: Embeddings) -> dict[str, Tensor]:
    out = {f"{side}.pooled": emb.pooled}
    if emb.tokens is not None:
        out[f"{side}.tokens"] = emb.tokens
    if emb.mask is not None:
        out[f"{side}.mask"] = emb.mask
    out.update({f"{side}.extra.{k}": v for k, v in emb.extra.items()})
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}


def unflatten(side: str, tensors: dict[str, Tensor]) -> Embeddings:
    p = f"{side}."
    extra = {k[len(p) + 6:]: v for k, v in tensors.items() if k.startswith(p + "extra.")}
    return Embeddings(pooled=tensors[p + "pooled"], tokens=tensors.get(p + "tokens"), mask=tensors.get(p + "mask"),
                      extra=extra)


def paths(out: str | Path) -> tuple[Path, Path]:
    """(tensors, sidecar): ``FILE.safetensors`` and ``FILE.json``; ``.safetensors`` is added when missing."""
    out = Path(out)
    if out.is_dir():
        raise EmbeddingsError(f"--out {out} is a folder; give a file name, e.g. {out / 'embeddings.safetensors'}")
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    return out, out.with_suffix(".json")


def export_embeddings(ckpt: str | Path, dataset: str, out: str | Path, split: str | None = None,
                      allow_missing: bool = False, overrides: list[str] = (), trust_checkpoint: bool = False,
                      accelerator: str = "auto", devices: int = 1, ckpt_source: str | None = None,
                      method: str | None = None, experiment: str | None = None,
                      name: str | None = None, overwrite: bool = False) -> dict[str, Any] | None:
    """Run the retrieval evaluation of ``ckpt`` on the split and write its embeddings (rank 0; other ranks return
    None). Returns the sidecar dict; its ``eval`` entry holds the results JSON of the same run (metrics included),
    ``files`` (not in the sidecar) the two files written. An existing pair is refused before the evaluation runs
    unless ``overwrite`` (see ``write_embeddings``)."""
    from vtp_bench.distributed import rank_world
    from vtp_bench.evaluate import evaluate, refuse_existing, sha256_of

    paths(out)  # a folder given as --out is refused before anything runs
    if not overwrite:
        for p in paths(out):
            refuse_existing(p)
    task = KeepingRetrieval()
    result = evaluate(ckpt, dataset, split=split, allow_missing=allow_missing, overrides=overrides,
                      trust_checkpoint=trust_checkpoint, accelerator=accelerator, devices=devices,
                      ckpt_source=ckpt_source, method=method, experiment=experiment, task=task, name=name)
    if rank_world()[0] != 0:
        return None
    assert task.kept is not None
    video, text, eset = task.kept
    tensors = {**flatten("video", video), **flatten("text", text), "text_to_video": eset.text_to_video.long()}
    meta = {
        "format": FORMAT,
        "method": result["method"],
        "experiment": result["experiment"],
        "similarity": "pooled_cosine" if task.pooled_cosine else "method",
        "checkpoint": str(Path(ckpt).resolve()),
        "checkpoint_sha256": sha256_of(Path(ckpt)),
        "checkpoint_source": result["checkpoint_source"],
        "load": {"ckpt_source": ckpt_source, "method": method, "experiment": experiment,
                 "overrides": list(overrides)},
        "dataset": result["dataset"],
        "split": result["split"],
        "manifest": result["manifest"],
        "manifest_sha256": result["manifest_sha256"],
        "protocol": result.get("protocol"),
        "frames": result["frames"],
        "sampler": result["sampler"],
        "img_size": result["img_size"],
        "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
                    for k, v in tensors.items()},
        "video_ids": list(eset.video_ids),
        "text_ids": list(eset.text_ids),
        "texts": list(eset.texts),
        "num_missing": result.get("num_missing", 0),
        "missing": list(eset.missing),
        "seed": result.get("seed"),
        "per_query": result.get("per_query"),  # each query's outcome of the metrics in eval (report.stats)
        "eval": {k: v for k, v in result.items() if k != "per_query"},
        "vtp_bench_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta["files"] = [str(p) for p in write_embeddings(out, tensors, meta, overwrite)]
    return meta


def write_embeddings(out: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any], overwrite: bool
                     ) -> tuple[Path, Path]:
    """Write the pair atomically (both written before either is renamed into place; the sidecar last, so a
    failure leaves the previous pair); returns it. Without ``overwrite``, when another run wrote ``out``
    meanwhile, the pair goes to ``<stem>.<n>.safetensors`` / ``.json`` beside it."""
    import sys

    from safetensors.torch import save

    from vtp_bench.atomic import atomic_path, atomic_write_bytes

    first = paths(out)
    first[0].parent.mkdir(parents=True, exist_ok=True)
    for n in range(1 if overwrite else 1000):
        tensor_path, sidecar = paths(first[0].with_name(f"{first[0].stem}.{n}.safetensors")) if n else first
        if not overwrite and sidecar.exists():
            continue
        data = save(tensors, metadata={"format": FORMAT, "sidecar": sidecar.name})  # bytes: no 0600 file
        try:
            with atomic_path(sidecar) as tmp:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(json.dumps(meta, indent=2))
                atomic_write_bytes(tensor_path, data, overwrite=overwrite)
        except FileExistsError:
            continue
        if n:
            print(f"note: {first[0]} was written by another export meanwhile; these embeddings are in "
                  f"{tensor_path}", file=sys.stderr)
        return tensor_path, sidecar
    raise EmbeddingsError(f"{first[0]} and {first[0].stem}.1..999.safetensors all exist; choose another --out")


@dataclass
class EmbeddingFile:
    """An exported split: both sides as ``Embeddings``, the caption -> video rows and the sidecar."""

    video: Embeddings
    text: Embeddings
    text_to_video: Tensor
    meta: dict[str, Any]

    @property
    def video_ids(self) -> list[str]:
        return self.meta["video_ids"]


def load_embeddings(path: str | Path) -> EmbeddingFile:
    """Read ``FILE.safetensors`` + ``FILE.json`` (either name may be given), checking that they belong together."""
    from safetensors.torch import load_file

    tensor_path, sidecar = paths(Path(path).with_suffix(".safetensors") if Path(path).suffix == ".json" else path)
    for p in (tensor_path, sidecar):
        if not p.is_file():
            raise EmbeddingsError(f"{p} does not exist; write it with `vtp-bench embed --ckpt ... --dataset ... "
                                  f"--out {tensor_path}`")
    meta = json.loads(sidecar.read_text())
    if meta.get("format") != FORMAT:
        raise EmbeddingsError(f"{sidecar}: format {meta.get('format')!r}, expected {FORMAT!r}; re-export it")
    tensors = load_file(str(tensor_path))
    video, text = unflatten("video", tensors), unflatten("text", tensors)
    if len(video) != len(meta["video_ids"]) or len(text) != len(meta["text_ids"]):
        raise EmbeddingsError(f"{tensor_path} holds {len(video)} videos and {len(text)} texts, its sidecar {sidecar} "
                              f"names {len(meta['video_ids'])} and {len(meta['text_ids'])}: the two files do not "
                              "belong together; re-export")
    return EmbeddingFile(video, text, tensors["text_to_video"], meta)
