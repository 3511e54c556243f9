"""Region features: DemoVLP's top-K / geometry / edge padding on files in the official npz layout."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.official import official_npz
from vtp_bench.data.regions import RegionReadError, read_region_file, read_regions, region_file_count, synthetic_regions


def test_top_k_by_confidence_geometry_and_edge_padding(tmp_path):
    many = official_npz(tmp_path / "0.npz", 50, 0)
    feats, geo, mask = read_region_file(tmp_path / "0.npz", 30)
    order = sorted(range(50), key=lambda i: -many["conf"][i])[:30]  # brute force
    assert np.array_equal(feats, many["x"][order]) and mask.all()
    x1, y1, x2, y2 = many["bbox"][order[4]]
    w, h = many["w"], many["h"]
    assert np.allclose(geo[4], [x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) / w, (y2 - y1) / h], atol=1e-6)

    few = official_npz(tmp_path / "1.npz", 12, 1)
    feats, geo, mask = read_region_file(tmp_path / "1.npz", 30)
    assert mask.sum() == 12 and mask[:12].all()
    last = int(np.argsort(-few["conf"], kind="stable")[11])
    assert np.array_equal(feats[12:], np.repeat(few["x"][last][None], 18, 0))  # np.pad 'edge'
    assert np.array_equal(geo[29], geo[11])

    r = read_regions(tmp_path, [1, 0, 1])
    assert r.feats.shape == (3, 30, 2048) and r.boxes.shape == (3, 30, 6) and r.mask.shape == (3, 30)
    assert region_file_count(tmp_path) == 2

def test_pickled_code_is_refused_and_bad_files_named(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    np.savez(tmp_path / "0.npz", x=np.zeros((2, 2048), np.float32), bbox=np.zeros((2, 4), np.float32),
             image_h=10, image_w=10, info=np.array(Evil(), dtype=object))
    with pytest.raises(RegionReadError, match="refusing to unpickle builtins.print"):
        read_region_file(tmp_path / "0.npz")
    np.savez(tmp_path / "1.npz", x=np.zeros((2, 2048), np.float32))
    with pytest.raises(RegionReadError, match="missing"):
        read_region_file(tmp_path / "1.npz")
    (tmp_path / "2.npz").write_bytes(b"not a zip")
    with pytest.raises(RegionReadError, match="2.npz"):
        read_region_file(tmp_path / "2.npz")
    with pytest.raises(RegionReadError, match="not found"):
        read_region_file(tmp_path / "9.npz")
    (tmp_path / "gap").mkdir()
    (tmp_path / "gap" / "1.npz").write_bytes(b"")
    with pytest.raises(RegionReadError, match="0.npz"):
        region_file_count(tmp_path / "gap")

def test_synthetic_boxes_from_the_generator(tmp_path):
    from vtp_bench.data.manifest import read_manifest, resolve_path
    from vtp_bench.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "s", num_videos=5, seed=0, grounding_videos=0, progress=False)
    row = read_manifest(tmp_path / "s" / "train.jsonl")[0]
    npz = resolve_path(row.boxes, tmp_path / "s" / "train.jsonl")
    with np.load(npz) as z:
        boxes, visible = z["boxes"], z["visible"]
    r = synthetic_regions(npz, [0, 5, 15], num_regions=4)
    for t, f in enumerate([0, 5, 15]):
        vis = boxes[f][visible[f]]
        assert r.mask[t].sum() == len(vis)
        assert np.allclose(r.boxes[t, : len(vis), :4], vis)
        assert np.allclose(r.boxes[t, : len(vis), 4], vis[:, 2] - vis[:, 0])
    assert not r.feats.any()
