"""Manifest rows -> samples: padding masks, retrieval-set grouping, skip markers, transforms."""

import json
import random

import torch

from vtp_bench.data.dataset import collate
from vtp_bench.data.transforms import VideoTransform, center_crop_resize, random_resized_crop
from vtp_bench.tasks.retrieval import RetrievalSet


def _manifest(tmp_path, rows):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_retrieval_set_groups_captions_by_video(tmp_path):
    rows = [
        {"video_id": v, "path": f"{v}.mp4", "text": f"{v} caption {i}", "text_id": f"{v}_{i}", "split": "test"}
        for v, n in (("b", 2), ("a", 1), ("c", 3)) for i in range(n)
    ]
    for v in "abc":
        (tmp_path / f"{v}.mp4").write_bytes(b"x")
    rs = RetrievalSet.from_manifest(_manifest(tmp_path, rows))
    assert rs.video_ids == ["b", "a", "c"]  # first-appearance order
    assert rs.text_to_video.tolist() == [0, 0, 1, 2, 2, 2]
    dropped = rs.drop_videos([0])
    assert dropped.video_ids == ["a", "c"] and dropped.text_to_video.tolist() == [0, 1, 1, 1]
    assert dropped.texts[0] == "a caption 0" and dropped.missing == ["b"]


def test_collate_drops_skipped_items_and_lists_them():
    good = {"video": torch.zeros(4, 3, 8, 8), "video_mask": torch.ones(4, dtype=torch.bool), "text": "t",
            "video_id": "v1", "text_id": "t1", "index": 0}
    bad = {"skipped": "v2", "error": "cannot read video v2.mp4: corrupt"}
    b = collate([good, bad, dict(good, index=2)])
    assert b["size"] == 2 and b["video"].shape == (2, 4, 3, 8, 8)
    assert b["skipped"] == ["v2"] and "corrupt" in b["skipped_errors"][0]
    assert b["index"].tolist() == [0, 2]
    empty = collate([bad])
    assert empty["size"] == 0 and empty["skipped"] == ["v2"]


def test_transforms_shapes_and_same_crop_for_all_frames():
    frames = torch.arange(2 * 20 * 30 * 3, dtype=torch.float32).reshape(2, 20, 30, 3).remainder(255).to(torch.uint8)
    frames[1] = frames[0]  # identical frames must stay identical after a random crop
    x = VideoTransform(16, train=True, crop_scale=(0.5, 1.0), hflip=True)(frames, random.Random(0))
    assert x.shape == (2, 3, 16, 16)
    assert torch.equal(x[0], x[1])
    y = VideoTransform(16, train=False)(frames)
    assert y.shape == (2, 3, 16, 16)


def test_center_crop_takes_the_middle_square():
    x = torch.zeros(1, 3, 10, 20)
    x[..., :, 5:15] = 1.0  # the centre 10x10 square
    assert torch.allclose(center_crop_resize(x, 10), torch.ones(1, 3, 10, 10))


def test_random_resized_crop_is_deterministic_by_rng():
    x = torch.rand(2, 3, 40, 50)
    a = random_resized_crop(x, 16, (0.3, 1.0), random.Random(5))
    b = random_resized_crop(x, 16, (0.3, 1.0), random.Random(5))
    assert torch.equal(a, b)


def test_decode_options_scale_in_the_decoder_and_items_name_their_dataset(tmp_path):
    from helpers.videos import write_indexed_video
    from vtp_bench.data.dataset import DecodeOptions, MixedDataset, VideoTextDataset
    from vtp_bench.data.manifest import ManifestRow, write_manifest

    write_indexed_video(tmp_path / "v.mp4", 20)  # 64 x 48
    write_manifest(tmp_path / "m.jsonl", [ManifestRow("v", "v.mp4", "a", "v_0", "train")])
    seen = []

    def transform(frames, rng):
        seen.append(tuple(frames.shape))
        return torch.zeros(frames.shape[0], 3, 8, 8)

    for decode, shape in ((None, (4, 48, 64, 3)), (DecodeOptions(size=24), (4, 24, 32, 3))):
        parts = [VideoTextDataset(tmp_path / "m.jsonl", 4, transform, "uniform", decode=decode, name=name)
                 for name in ("webvid", "cc3m")]
        mixed = MixedDataset(parts)
        assert len(mixed) == 2 and mixed[0]["dataset"] == "webvid"
        item = mixed[1]  # global index 1 = the second dataset's item 0
        assert seen[-1] == shape and item["dataset"] == "cc3m" and item["index"] == 0


def test_eval_loader_items_are_the_deterministic_eval_transform_of_the_decoded_frames(tmp_path):
    """What the evaluation encodes, checked at the pixels: each test item equals the uniform frames of its video,
    centre-cropped to the short side's square, resized bilinearly and normalised with ImageNet's statistics (written
    out here), on every pass; a training transform (random crop, flip) in the eval loader fails this."""
    import torch.nn.functional as F

    from conftest import tiny_config
    from vtp_bench.data.datamodule import VideoTextDataModule
    from vtp_bench.data.synthetic import generate_synthetic
    from vtp_bench.data.video import read_frames_timed

    generate_synthetic(tmp_path / "synth", num_videos=20, seed=5, grounding_videos=0, progress=False)
    cfg = tiny_config("frozen", f"data.root={tmp_path}", "data.img_size=40", "data.crop_scale=[0.3,0.5]",
                      "data.hflip=true", "data.eval_batch_size=3", "data.num_workers=0")
    dm = VideoTextDataModule(cfg, eval_split="test")
    dm.setup("test")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    passes = [[b for b in dm.test_dataloader()] for _ in range(2)]
    seen = 0
    for batch, again in zip(*passes):
        assert torch.equal(batch["video"], again["video"])
        for video, vid in zip(batch["video"], batch["video_id"]):
            i = dm.test_set.video_ids.index(vid)
            frames, _, _ = read_frames_timed(dm.test_set.video_paths[i], cfg.data.num_frames, sampling="uniform")
            x = frames.permute(0, 3, 1, 2).float() / 255.0
            h, w = x.shape[-2:]
            s = min(h, w)
            x = x[..., (h - s) // 2: (h - s) // 2 + s, (w - s) // 2: (w - s) // 2 + s]
            x = (F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=False) - mean) / std
            assert torch.allclose(video[: len(x)], x, atol=1e-5), vid
            seen += 1
    assert seen == len(dm.test_set.video_ids) == 2  # every test video, once
