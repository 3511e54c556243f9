"""Method-declared per-item inputs (data/inputs/): region boxes moved with the clip's crop, detector region
features without decoding pixels, FiT's off-by-one "rand_fit" sampler, the errors that name the fix, and an input
registered from outside the package going through the same path (loaded, collated, faked)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from helpers.official import official_npz
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.data.dataset import decode_clip
from vtp_bench.data.inputs import Input, InputError, InputReadError, ItemInputs, method_inputs
from vtp_bench.data.manifest import ManifestRow, read_manifest, resolve_path, write_manifest
from vtp_bench.data.regions import synthetic_regions
from vtp_bench.data.synthetic import generate_synthetic
from vtp_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Crop, VideoTransform
from vtp_bench.data.video import sample_indices
from vtp_bench.registry import INPUTS, METHODS
from vtp_bench.testing import fake_method_inputs


def test_rand_fit_never_draws_the_last_index_of_a_segment():
    rng = random.Random(0)
    seen = Counter(i for _ in range(2000) for i in sample_indices(16, 4, "rand_fit", rng))
    assert set(seen) == {0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14}  # segments [0,4) [4,8) ...: 3, 7, 11, 15 never
    seen = Counter(i for _ in range(500) for i in sample_indices(8, 1, "rand_fit", rng))
    assert set(seen) == set(range(7))  # DemoVLP pre-training: one of 8 region files, never the 8th
    assert sample_indices(8, 8, "rand_fit", rng) == list(range(8))  # one-index segments (official: raises)
    assert set(i for _ in range(500) for i in sample_indices(16, 4, "rand", rng)) == set(range(16))


def test_crop_moves_boxes_by_hand():
    crop = Crop(top=10, left=20, height=50, width=40, in_height=100, in_width=80)
    boxes = np.array([[0.25, 0.1, 0.5, 0.3],   # x 20..40 px, y 10..30 px: the crop's top-left quarter-ish
                      [0.0, 0.0, 0.2, 0.05],   # x 0..16, y 0..5: entirely left of / above the crop
                      [0.5, 0.5, 1.0, 1.0]])   # x 40..80, y 50..100: clipped at the crop's right and bottom
    out, visible = crop.boxes(boxes)
    assert np.allclose(out[0], [0.0, 0.0, 0.5, 0.4]) and visible[0]
    assert not visible[1]
    assert np.allclose(out[2], [0.5, 0.8, 1.0, 1.0]) and visible[2]
    flipped, _ = Crop(10, 20, 50, 40, 100, 80, flip=True).boxes(boxes)
    assert np.allclose(flipped[0], [0.5, 0.0, 1.0, 0.4]) and np.allclose(flipped[2], [0.0, 0.8, 0.5, 1.0])


def test_apply_returns_the_pixels_of_call():
    frames = torch.randint(0, 255, (2, 40, 60, 3), dtype=torch.uint8)
    t = VideoTransform(16, train=True, crop_scale=(0.3, 1.0), hflip=True)
    for seed in range(5):
        x, crop = t.apply(frames, random.Random(seed))
        assert torch.equal(x, t(frames, random.Random(seed)))
        assert 0 <= crop.top and crop.top + crop.height <= 40 and crop.left + crop.width <= 60


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("regions")
    generate_synthetic(root / "synth", num_videos=20, seed=4, grounding_videos=0, progress=False)
    return root


def _pixels(x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return x * std + mean


def _centres_on_objects(video: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of real boxes whose centre pixel is saturated (the shapes are saturated on a grey background)."""
    hits = total = 0
    for t in range(video.shape[0]):
        img = _pixels(video[t])
        size = img.shape[-1]
        for k in range(mask.shape[1]):
            if mask[t, k]:
                x1, y1, x2, y2 = boxes[t, k, :4].tolist()
                px = img[:, min(size - 1, int((y1 + y2) / 2 * size)), min(size - 1, int((x1 + x2) / 2 * size))]
                hits += float(px.max() - px.min()) > 0.35
                total += 1
    return hits / max(total, 1)


def test_region_boxes_follow_the_frames_and_the_crop(synth_root):
    cfg = tiny_config("demovlp", f"data.root={synth_root}", "data.img_size=64", "data.crop_scale=[0.4,0.8]",
                      "data.hflip=true")
    assert method_inputs(cfg) == {"video", "region_boxes"}
    dm = VideoTextDataModule(cfg)
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["region_boxes"].shape == (4, 4, 6) and item["region_mask"].shape == (4, 4)
    # the same item drawn again (its RNG depends on seed, epoch, index): the boxes are those of its frames and crop
    part = dm.train_set.parts[0]
    row = part.rows[0]
    rng = random.Random((part.seed * 1_000_003 + part.epoch) * 10_000_019 + 0)
    clip = decode_clip(resolve_path(row.path, part.manifest), 4, "rand", dm.train_transform, rng)
    expected = synthetic_regions(resolve_path(row.boxes, part.manifest), clip.indices, 4, clip.crop)
    assert torch.equal(item["video"], clip.video)
    assert np.array_equal(item["region_boxes"].numpy(), expected.boxes)
    assert np.array_equal(item["region_mask"].numpy(), expected.mask)
    # and they land on the objects' pixels, cropped and flipped ones included
    for i in range(len(part)):
        it = part[i]
        assert _centres_on_objects(it["video"], it["region_boxes"], it["region_mask"]) > 0.8
    loader = dm.eval_loader(dm.val_set)
    batch = next(iter(loader))
    assert batch["region_boxes"].shape[:3] == batch["region_mask"].shape
    rows = dm.val_set.rows
    for j in range(batch["size"]):  # eval: uniform frames, a centre crop (the whole square frame)
        r = synthetic_regions(resolve_path(rows[j].boxes, dm.val_set.manifest), sample_indices(16, 4), 4)
        assert np.allclose(batch["region_boxes"][j].numpy(), r.boxes)
        assert np.array_equal(batch["region_mask"][j].numpy(), r.mask)
        assert _centres_on_objects(batch["video"][j], batch["region_boxes"][j], batch["region_mask"][j]) > 0.8


def _feature_dataset(root: Path, frames: dict[str, int]) -> None:
    """A 'synth' manifest whose videos do not exist, with official region files for each listed video."""
    for split in ("train", "val", "test"):
        rows = [ManifestRow(v, f"videos/{v}.mp4", f"caption of {v}", f"{v}_0", split) for v in frames]
        write_manifest(root / "synth" / f"{split}.jsonl", rows)
    for v, n in frames.items():
        d = root / "synth" / "feats" / v
        if n:
            d.mkdir(parents=True)
        for k in range(n):
            official_npz(d / f"{k}.npz", 5 + k, seed=k)


def test_region_features_without_pixels(tmp_path):
    _feature_dataset(tmp_path, {"a": 8, "b": 3, "c": 8, "gone": 0})
    template = f"{tmp_path}/synth/feats/{{video_id}}"
    cfg = tiny_config("demovlp", f"data.root={tmp_path}", "method.region_source=features", "method.video.feat_dim=2048",
                      f"data.regions={json.dumps({'synth': template})}", "data.num_regions=30",
                      "method.video.num_regions=30", "data.train_sampling=rand_fit", "data.batch_size=4")
    assert method_inputs(cfg) == {"region_feats"}
    dm = VideoTextDataModule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "video" not in batch
    assert batch["skipped"] == ["gone"] and "region feature folder not found" in batch["skipped_errors"][0]
    assert batch["region_feats"].shape == (3, 4, 30, 2048) and batch["region_boxes"].shape == (3, 4, 30, 6)
    b = batch["video_id"].index("b")  # 3 files for 4 frames: the 4th frame is padding
    assert batch["region_mask"][b, :3].any(-1).all() and not batch["region_mask"][b, 3].any()
    assert batch["region_mask"][batch["video_id"].index("a")].sum(-1).tolist() == [5, 7, 9, 11]  # rand_fit: 0 2 4 6
    val = next(iter(dm.eval_loader(dm.val_set)))  # uniform: (start + next - 1) // 2 = files 0, 2, 4, 6 of 8
    assert val["region_mask"][0].sum(-1).tolist() == [5, 7, 9, 11] and val["skipped"] == ["gone"]
    first = official_npz(tmp_path / "check.npz", 5, seed=0)  # file 0 of video a, written again
    top = np.argsort(-first["conf"], kind="stable")
    assert torch.equal(val["region_feats"][0, 0, :5], torch.from_numpy(first["x"][top]))


def test_missing_configuration_is_named(tmp_path):
    _feature_dataset(tmp_path, {"a": 2})
    cfg = tiny_config("demovlp", f"data.root={tmp_path}", "method.region_source=features")
    with pytest.raises(InputError, match=r"data\.regions\.synth="):
        VideoTextDataModule(cfg)
    frozen = tiny_config("frozen")
    assert method_inputs(frozen) == {"video"}


def test_rows_reach_the_eval_set(synth_root):
    from vtp_bench.tasks.retrieval import RetrievalSet

    rset = RetrievalSet.from_manifest(synth_root / "synth" / "val.jsonl")
    assert [r.video_id for r in rset.rows] == rset.video_ids
    assert rset.drop_videos([0]).rows == rset.rows[1:]
    rows = read_manifest(synth_root / "synth" / "val.jsonl")
    assert rset.rows[0].boxes == rows[0].boxes


def test_train_and_eval_on_region_features_only(tmp_path):
    """Through the CLI: a run that never decodes a video (there are none), then eval of its checkpoint."""
    from conftest import tiny_overrides
    from vtp_bench.cli import main

    _feature_dataset(tmp_path, {f"v{i}": 3 for i in range(6)})
    regions = json.dumps({"synth": f"{tmp_path}/synth/feats/{{video_id}}"})
    args = [*tiny_overrides("demovlp"), f"data.root={tmp_path}", "method.region_source=features",
            "method.video.feat_dim=2048", "method.video.num_regions=30", "data.num_regions=30",
            f"data.regions={regions}", f"run.dir={tmp_path / 'runs'}", "run.version=t", "trainer.max_steps=2",
            "optim.warmup_steps=0"]
    assert main(["train", "demovlp_synth", *args]) == 0
    ckpt = tmp_path / "runs" / "demovlp_synth" / "t" / "checkpoints" / "last.ckpt"
    out = tmp_path / "test.json"
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--split", "test", "--out", str(out),
                 "--data-root", str(tmp_path), "--accelerator", "cpu"]) == 0
    res = json.loads(out.read_text())
    assert res["num_videos"] == 6 and res["num_queries"] == 6 and 0 <= res["metrics"]["t2v/R@1"] <= 100


# --- an input registered from outside the package -------------------------------------------------------------
@dataclass
class _LightOptions:
    scale: float = 1.0
    skip: tuple[str, ...] = ()  # video ids whose side file is "missing"


class _Light(Input):
    """Test-only: each frame's mean pixel times ``scale`` (fixed length, read at the decoded clip) and the caption's
    word lengths (variable length)."""

    name = "test_light"
    keys = ("light", "word_lengths")
    variable_length = ("word_lengths",)
    needs = frozenset({"video"})
    Options = _LightOptions

    def load(self, item):
        if item.row.video_id in self.options.skip:
            raise InputReadError(f"no light file for {item.row.video_id}")
        return {"light": item.clip.video.mean((1, 2, 3)) * self.options.scale,
                "word_lengths": torch.tensor([len(w) for w in item.row.text.split()])}

    @classmethod
    def fake(cls, cfg, n, generator, dtype):
        scale = cls.read_options(cfg).scale
        return {"light": torch.rand(n, cfg.data.num_frames, generator=generator, dtype=dtype) * scale,
                "word_lengths": torch.randint(1, 9, (n, 5), generator=generator)}


@pytest.fixture
def light_input(monkeypatch):
    """``test_light`` registered as a plugin file would, read by Frozen; unregistered after the test."""
    INPUTS.names()  # the package's inputs first
    INPUTS.register("test_light")(_Light)
    monkeypatch.setattr(METHODS.get("frozen"), "data_inputs", classmethod(lambda c, cfg: frozenset({"video",
                                                                                                "test_light"})))
    yield
    INPUTS._entries.pop("test_light", None)


def test_an_input_registered_outside_the_package_is_loaded_collated_and_faked(synth_root, light_input):
    cfg = tiny_config("frozen", f"data.root={synth_root}", "data.inputs.test_light.scale=2.0")
    assert method_inputs(cfg) == {"video", "test_light"}
    dm = VideoTextDataModule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    b, t = batch["video"].shape[:2]
    assert batch["light"].shape == (b, t) and torch.allclose(batch["light"], batch["video"].mean((2, 3, 4)) * 2)
    lengths = [[len(w) for w in text.split()] for text in batch["text"]]  # padded with zeros to the longest
    assert batch["word_lengths"].shape == (b, max(map(len, lengths)))
    assert all(batch["word_lengths"][i].tolist() == x + [0] * (batch["word_lengths"].shape[1] - len(x))
               for i, x in enumerate(lengths))
    val = next(iter(dm.eval_loader(dm.val_set)))  # evaluation clips read it too
    assert val["light"].shape == val["video"].shape[:2]
    fake = fake_method_inputs(cfg, 3, torch.Generator().manual_seed(0), torch.float32)
    assert set(fake) == {"light", "word_lengths"} and fake["light"].shape == (3, cfg.data.num_frames)
    # a missing side file skips the item (counted), as an unreadable video
    part = dm.train_set.parts[0]
    skip = ItemInputs.of({"video": None, "test_light": {"skip": [part.rows[0].video_id]}})
    part.inputs = skip
    assert "no light file" in part[0]["error"] and "light" in part[1]
    # options are checked by the input's Options, naming the key
    with pytest.raises(InputError, match=r"data\.inputs\.test_light: Key 'scal'"):
        VideoTextDataModule(tiny_config("frozen", f"data.root={synth_root}", "data.inputs.test_light.scal=2"))
    with pytest.raises(InputError, match=r"data\.inputs\.test_ligth: no input 'test_ligth' is registered"):
        VideoTextDataModule(tiny_config("frozen", f"data.root={synth_root}", "data.inputs.test_ligth.scale=2"))


def test_declarations_are_checked():
    with pytest.raises(InputError, match=r"input 'frame_times' needs \['video'\] too"):
        ItemInputs.of(["frame_times"])
    with pytest.raises(InputError, match="cannot be read with"):
        ItemInputs.of(["video", "grounding_clips", "region_boxes"])
    with pytest.raises(InputError, match="registered inputs are"):
        ItemInputs.of(["video", "nope"])
    both = ItemInputs.of(["video", "region_boxes", "region_feats"])  # the features' file brings the boxes
    assert [p.name for p in both.loaded] == ["video", "region_feats"]
    grounding = ItemInputs.of(["video", "grounding_clips", "frame_times"])
    assert [p.name for p in grounding.loaded] == ["grounding_clips"]  # the clip and its frame times: not in training
    assert grounding.per_clip().names == {"video", "frame_times"}  # each evaluation clip
