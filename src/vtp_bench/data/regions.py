"""Region features for DemoVLP: the official bottom-up-attention outputs, and the synthetic dataset's boxes.

Official layout (docs/methods/demovlp.md): one ``.npz`` per extracted frame, ``<video dir>/<k>.npz`` with
``k = 0, 1, ...`` (usually 8 uniformly sampled frames), keys ``x`` [n, 2048] features, ``bbox`` [n, 4]
``(x1, y1, x2, y2)`` in pixels, ``image_h``, ``image_w`` and ``info`` (a pickled dict with
``objects_conf``). DemoVLP keeps the ``K`` (30) most confident boxes, describes each by the 6-d geometry
``(x1/W, y1/H, x2/W, y2/H, w/W, h/H)`` and, when a frame has fewer boxes, pads by repeating the last kept
row; the mask marks the real ones.

``info`` is a pickled object array: it is read with a restricted unpickler that only rebuilds numpy arrays,
dtypes and scalars and plain Python containers, so a region file cannot run code (unlike ``np.load(...,
allow_pickle=True)``).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from vtp_bench.data.transforms import Crop

FEATURE_DIM = 2048
GEOMETRY_DIM = 6

_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class RegionReadError(RuntimeError):
    """A region-feature file that is missing, damaged or not in the bottom-up-attention layout."""


@dataclass
class Regions:
    feats: np.ndarray  # float32 [T, K, 2048]
    boxes: np.ndarray  # float32 [T, K, 6] geometry (x1/W, y1/H, x2/W, y2/H, w/W, h/H)
    mask: np.ndarray  # bool [T, K], True = a real box (False rows repeat the last real one)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - pickle's hook
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (only numpy arrays are allowed)")


def _load_member(z: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    data = io.BytesIO(z.read(f"{name}.npy"))
    version = np.lib.format.read_magic(data)
    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(data) if version == (1, 0)
                             else np.lib.format.read_array_header_2_0(data))
    if dtype.hasobject:
        try:
            return _NumpyOnlyUnpickler(data).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
            raise RegionReadError(f"{path}: cannot read {name!r} ({e})") from None
    data.seek(0)
    return np.lib.format.read_array(data, allow_pickle=False)


def read_region_file(path: str | Path, num_regions: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame: (feats [K, 2048], geometry [K, 6], mask [K]) with DemoVLP's top-K and edge padding."""
    path = Path(path)
    if not path.is_file():
        raise RegionReadError(f"{path}: region feature file not found (expected <video dir>/<k>.npz from "
                              f"bottom-up-attention's extract_features)")
    try:
        with zipfile.ZipFile(path) as z:
            names = {n[:-4] for n in z.namelist() if n.endswith(".npy")}
            missing = {"x", "bbox", "image_h", "image_w", "info"} - names
            if missing:
                raise RegionReadError(f"{path}: keys {sorted(missing)} missing (has {sorted(names)}); expected "
                                      f"bottom-up-attention's x, bbox, image_h, image_w, info")
            x, bbox = _load_member(z, "x", path), _load_member(z, "bbox", path)
            h, w = float(_load_member(z, "image_h", path)), float(_load_member(z, "image_w", path))
            info = _load_member(z, "info", path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise RegionReadError(f"{path}: not a readable .npz ({e})") from None
    info = info.item() if isinstance(info, np.ndarray) else info
    conf = np.asarray(info["objects_conf"], dtype=np.float64) if isinstance(info, dict) else None
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != FEATURE_DIM or bbox.shape != (n, 4) or conf is None or conf.shape != (n,):
        raise RegionReadError(f"{path}: shapes x {x.shape}, bbox {bbox.shape}, objects_conf "
                              f"{None if conf is None else conf.shape}; expected [n, 2048], [n, 4], [n]")
    if n == 0 or h <= 0 or w <= 0:
        raise RegionReadError(f"{path}: {n} boxes in a {w}x{h} image")
    order = np.argsort(-conf, kind="stable")[:num_regions]
    b = bbox[order].astype(np.float64)
    geometry = np.stack([b[:, 0] / w, b[:, 1] / h, b[:, 2] / w, b[:, 3] / h,
                         (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], axis=1)
    kept = len(order)
    pad = num_regions - kept
    feats = np.pad(x[order].astype(np.float32), ((0, pad), (0, 0)), mode="edge")
    geometry = np.pad(geometry.astype(np.float32), ((0, pad), (0, 0)), mode="edge")
    mask = np.arange(num_regions) < kept
    return feats, geometry, mask


def region_file_count(video_dir: str | Path) -> int:
    """How many frames were extracted: ``0.npz ... (n-1).npz`` must all exist."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise RegionReadError(f"{video_dir}: region feature folder not found")
    ks = sorted(int(p.stem) for p in video_dir.glob("*.npz") if p.stem.isdigit())
    if not ks or ks != list(range(len(ks))):
        raise RegionReadError(f"{video_dir}: expected frame files 0.npz ... n-1.npz, found {ks[:10]}")
    return len(ks)


def read_regions(video_dir: str | Path, file_indices: Sequence[int], num_regions: int = 30) -> Regions:
    """The regions of the extracted frames ``file_indices`` (e.g. ``sample_indices(n_files, T, ...)``)."""
    frames = [read_region_file(Path(video_dir) / f"{k}.npz", num_regions) for k in file_indices]
    return Regions(*(np.stack(parts) for parts in zip(*frames)))


def synthetic_regions(boxes_npz: str | Path, frame_indices: Sequence[int], num_regions: int,
                      crop: Crop | None = None) -> Regions:
    """The synthetic dataset's ground-truth boxes at video frames ``frame_indices``, as DemoVLP geometry.

    There is no detector here, so ``feats`` is all zeros: a method pools its own features inside the boxes.
    Invisible objects are masked; padding repeats the last visible box, as the official reader does. ``crop``
    (the clip's crop and flip, ``transforms.Crop``) moves the boxes with the pixels; a box cropped away is
    invisible.
    """
    try:
        with np.load(boxes_npz, allow_pickle=False) as z:
            boxes, visible = z["boxes"], z["visible"].astype(bool)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise RegionReadError(f"{boxes_npz}: cannot read the boxes file ({e})") from None
    if len(frame_indices) and max(frame_indices) >= len(boxes):
        raise RegionReadError(f"{boxes_npz}: boxes for {len(boxes)} frames, frame {max(frame_indices)} requested")
    feats = np.zeros((len(frame_indices), num_regions, FEATURE_DIM), np.float32)
    geometry = np.zeros((len(frame_indices), num_regions, GEOMETRY_DIM), np.float32)
    mask = np.zeros((len(frame_indices), num_regions), bool)
    for t, f in enumerate(frame_indices):
        b, vis = boxes[f].astype(np.float32), visible[f]
        if crop is not None:
            b, inside = crop.boxes(b)
            vis = vis & inside
        b = b[vis][:num_regions]
        if len(b) == 0:
            continue
        g = np.concatenate([b, b[:, 2:3] - b[:, 0:1], b[:, 3:4] - b[:, 1:2]], axis=1)
        geometry[t] = np.pad(g, ((0, num_regions - len(b)), (0, 0)), mode="edge")
        mask[t, : len(b)] = True
    return Regions(feats, geometry, mask)
