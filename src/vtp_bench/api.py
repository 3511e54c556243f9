"""The Python API: a checkpoint as a model with ``encode_video``, ``encode_text`` and ``similarity``.

```python
import vtp_bench
model = vtp_bench.load("runs/frozen_synth/version_0/checkpoints/last.ckpt")   # or an exported folder,
v = model.encode_video(["a.mp4", "b.mp4"])        # or a released file with method= / experiment=
t = model.encode_text(["a man talks on the phone"])
s = model.similarity(t, v)                         # [n_text, n_video], the method's own score
```

Video files are read with the checkpoint's evaluation protocol (``data.eval_num_frames`` / ``num_frames``,
``eval_sampling``, ``img_size``, ``decode_size``, the deterministic evaluation transform) through the same dataset
code as ``vtp-bench eval`` and ``embed``, so ``encode_video`` of a test video equals ``embed``'s row for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from vtp_bench.methods.base import Embeddings, Method

__all__ = ["Model", "load"]


class _Files:
    """The evaluation-set view of a list of video files (what ``EvalClipDataset`` reads): one clip per file, and a
    manifest row per file for the per-item inputs that need one (frame times)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        from vtp_bench.data.evalset import Clip
        from vtp_bench.data.manifest import ManifestRow

        self.clips = [Clip(i, p) for i, p in enumerate(paths)]
        self.video_ids = [str(p) for p in paths]
        self.manifest = Path.cwd() / "vtp_bench.load.jsonl"  # a name for messages: the paths are absolute
        self.rows = [ManifestRow(str(p), str(p), "(no caption)", str(p), "test") for p in paths]


class Model:
    """A loaded method in evaluation mode on ``device``; ``module`` is the underlying ``VTPModule``."""

    def __init__(self, module: Any, device: str | torch.device = "cpu") -> None:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but CUDA is not available here; use device='cpu'")
        self.module = module.eval().to(device)
        self.device = torch.device(device)
        self.cfg = module.cfg

    @property
    def method(self) -> Method:
        return self.module.method

    @property
    def num_frames(self) -> int:
        d = self.cfg.data
        return int(d.eval_num_frames or d.num_frames)

    def _batches(self, paths: list[Path], progress: bool):
        from torch.utils.data import DataLoader

        from vtp_bench.data.dataset import DecodeOptions, EvalClipDataset, collate
        from vtp_bench.data.inputs import ItemInputs
        from vtp_bench.data.transforms import VideoTransform

        d = self.cfg.data
        ds = EvalClipDataset(_Files(paths), self.num_frames, VideoTransform(d.img_size, train=False), d.eval_sampling,
                             DecodeOptions(d.decode_size, d.decode_threads), ItemInputs.for_dataset(self.cfg, "files"))
        loader = DataLoader(ds, batch_size=int(d.eval_batch_size), collate_fn=collate, num_workers=0)
        if progress and len(loader) > 1:
            from tqdm import tqdm

            loader = tqdm(loader, desc="encoding videos", unit="batch")
        return loader

    def _pixels_only(self) -> None:
        regions = {"region_boxes", "region_feats"} & set(self.method.data_inputs(self.cfg.method))
        if regions:
            raise ValueError(f"method {self.cfg.method.name!r} reads {sorted(regions)} from a dataset's manifest and "
                             "detector files besides the pixels; encode a dataset with `vtp-bench embed` instead")

    @torch.no_grad()
    def encode_video(self, videos: Sequence[str | Path] | Tensor, progress: bool = True) -> Embeddings:
        """Video files (decoded as the checkpoint is evaluated), or a clip tensor [B, T, 3, H, W] already
        normalised as the data pipeline does (ImageNet mean/std). Returns the method's ``Embeddings``."""
        if isinstance(videos, Tensor):
            self._pixels_only()
            if videos.ndim != 5 or videos.shape[0] == 0:
                raise ValueError(f"a video tensor must be [B, T, 3, H, W] with B >= 1, got shape {tuple(videos.shape)}")
            if not videos.is_floating_point():
                raise TypeError(f"a video tensor must hold float frames normalised as the data pipeline does (ImageNet "
                                f"mean/std: (x / 255 - mean) / std), got {videos.dtype}; or give the video files")
            video = videos.to(self.device, torch.float32)
            mask = torch.ones(video.shape[:2], dtype=torch.bool, device=self.device)
            return self.method.encode_video({"video": video, "video_mask": mask}).detach()
        if isinstance(videos, (str, Path)):
            raise TypeError("encode_video takes a list of paths (or a tensor), not one path: [path]")
        self._pixels_only()
        paths = [Path(p).expanduser().resolve() for p in videos]
        if not paths:
            raise ValueError("encode_video needs at least one video")
        folders = [str(p) for p in paths if p.is_dir()]
        if folders:
            raise ValueError(f"{folders[0]} is a folder, not a video file (give the files inside it)")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(paths)} videos do not exist (e.g. {missing[0]})")
        parts: list[tuple[Tensor, Embeddings]] = []
        for batch in self._batches(paths, progress):
            if batch["skipped"]:
                raise ValueError(f"cannot decode {batch['skipped'][0]}: {batch['skipped_errors'][0]}")
            tensors = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            parts.append((batch["index"], self.method.encode_video(tensors).detach()))
        order = torch.argsort(torch.cat([i for i, _ in parts]))
        return Embeddings.cat([e for _, e in parts]).index(order.to(self.device))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Embeddings:
        """Captions or queries, tokenised by the method's own tokenizer; batches of ``data.eval_batch_size``."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string: [text]")
        texts = list(texts)
        if not texts:
            raise ValueError("encode_text needs at least one text")
        bs = int(self.cfg.data.eval_batch_size)
        return Embeddings.cat([self.method.encode_text({"text": texts[i:i + bs]}).detach()
                               for i in range(0, len(texts), bs)])

    @torch.no_grad()
    def similarity(self, text: Embeddings, video: Embeddings) -> Tensor:
        """[n_text, n_video], higher = more similar: the method's own score (what retrieval ranks by)."""
        return self.method.similarity(text, video)


def load(path: str | Path, *, method: str | None = None, experiment: str | None = None, device: str = "cpu",
         overrides: Sequence[str] = (), trust: bool = False, source: str | None = None) -> Model:
    """A vtp_bench ``.ckpt``, a folder written by ``vtp-bench export``, or a released file with ``method`` (its
    paper-size defaults, plus ``overrides``) or ``experiment`` (see ``models.checkpoints``)."""
    from vtp_bench.evaluate import module_from_checkpoint

    module = module_from_checkpoint(path, list(overrides), trust=trust, source=source, method=method,
                                    experiment=experiment)
    return Model(module, device)
