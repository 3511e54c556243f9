"""Datasets by name or by path: where each one's manifest and videos live.

- A registered name: ``<root>/<name>/<split>.jsonl`` (the manifest schema of data_manifests/README.md), videos
  resolved relative to the manifest unless the row's path is absolute. ``root`` is ``data.root`` (default
  ``$VTP_DATA_ROOT``, else ``data``). A missing manifest, or a manifest whose video folder does not exist, is an
  error that names the expected file and the command that makes it (``vtp-bench data convert``).
- A path (your own data): a manifest file (``my/test.jsonl``: all its rows, whatever split is asked for) or a
  folder of ``<split>.jsonl`` files. Its name in results and tables is the file's or folder's stem, or the
  ``label`` given (``eval --name``); a file named by its split (``mydata/test.jsonl``: the stem is a usual split
  name or its rows' split) takes its folder's name, so a table reads ``mydata/test``, not ``test/test``. A name
  that is a registered benchmark's is refused without a label, so no table calls other data by a benchmark's name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from vtp_bench.data.manifest import read_manifest, resolve_path
from vtp_bench.registry import DATASETS

SPLIT_STEMS = ("train", "val", "valid", "validation", "dev", "test")  # a manifest named so is named by its folder


class DataNotFoundError(FileNotFoundError):
    """A dataset's manifest is not where the config says; the message says which command makes it."""


@dataclass(frozen=True)
class DatasetSource:
    name: str
    split: str
    manifest: Path
    video_root: Path | None = None
    from_path: bool = False  # given as a path (your own data), not a registered name


def is_path(name: str) -> bool:
    """A dataset argument that names a manifest file or folder rather than a registered dataset."""
    return name.endswith(".jsonl") or "/" in name or os.sep in name or (name not in DATASETS and Path(name).is_dir())


def locate(name: str, root: str | Path, split: str, label: str | None = None, split_given: bool = False
           ) -> DatasetSource:
    """Resolve a dataset (registered name, or a manifest file / folder path) to its manifest, with an actionable
    error when it is missing. ``label`` names a path dataset in results (default: its stem). A manifest file is
    one split, used whole: a file whose rows hold several splits is refused, and so is ``split`` (when the user
    asked for it: ``split_given``) if the rows are of another."""
    if is_path(name):
        return _from_path(Path(name), split, label, split_given)
    if label is not None and label != name:
        raise DataNotFoundError(f"--name {label!r} renames your own data, given as a path; {name!r} is a "
                                "registered dataset and keeps its name")
    return DATASETS.get(name)(root=Path(root), split=split)


def _from_path(path: Path, split: str, label: str | None, split_given: bool = False) -> DatasetSource:
    if path.is_dir():
        manifest = path / f"{split}.jsonl"
        if not manifest.is_file():
            have = ", ".join(sorted(p.stem for p in path.glob("*.jsonl"))) or "none"
            raise DataNotFoundError(f"{path} holds no {split}.jsonl (the split asked for); its splits: {have}")
        stem = path.resolve().name
    elif path.is_file():
        manifest, stem = path, path.stem
    else:
        raise DataNotFoundError(f"{path} does not exist (a dataset given as a path is a manifest .jsonl or a folder "
                                "of <split>.jsonl files; `vtp-bench data from-folder` makes one from your videos)")
    splits = sorted({r.split for r in read_manifest(manifest)})
    if manifest == path and len(splits) > 1:
        raise DataNotFoundError(f"{manifest}: its rows belong to splits {', '.join(splits)}, but a manifest given as a "
                                "file is used whole (scored, or trained on, row by row); write one file per split "
                                "(<folder>/<split>.jsonl) and give the folder with --split")
    if manifest == path and split_given and splits and splits != [split]:
        raise DataNotFoundError(f"{manifest}: --split {split} was asked for, but its rows are split {splits[0]!r}; "
                                f"drop --split (a file is one split), or give the folder holding {split}.jsonl")
    folder = path.resolve().parent.name
    if manifest == path and (stem in SPLIT_STEMS or stem in splits) and folder and folder not in DATASETS:
        stem = folder  # mydata/test.jsonl: the test split of mydata (a benchmark's own folder keeps the stem)
    name = label or stem
    if name in DATASETS:
        raise DataNotFoundError(f"{manifest}: its name would be {name!r}, which is a registered benchmark; give it "
                                "another with --name (results must not call other data by a benchmark's name)")
    _check_video_folder(name, manifest)
    return DatasetSource(name, "+".join(splits), manifest, from_path=True)


@DATASETS.register("synth")
def synth(root: Path, split: str) -> DatasetSource:
    """The procedural synthetic dataset (``vtp-bench data synth``); splits train/val/test, grounding (all timed
    queries) and grounding_train/grounding_val/grounding_test (the same split by video, for a trained head)."""
    manifest = root / "synth" / f"{split}.jsonl"
    if not manifest.is_file():
        have = sorted(p.stem for p in (root / "synth").glob("*.jsonl"))
        if not have:
            raise DataNotFoundError(
                f"dataset 'synth' split {split!r}: expected manifest {manifest} is missing; create the dataset with "
                f"`vtp-bench data synth --out {root / 'synth'} --videos 1000 --seed 0` "
                f"(or set data.root / VTP_DATA_ROOT to where it was generated)")
        raise DataNotFoundError(
            f"dataset 'synth' has no split {split!r} ({manifest} is missing; its splits: {', '.join(have)}); a split "
            "that `data synth` does not write is converted from one that it does (`vtp-bench data convert --help`; "
            f"e.g. mc_test: `vtp-bench data convert mc_from_captions {root / 'synth' / 'test.jsonl'} --out "
            f"{manifest}`)")
    return DatasetSource("synth", split, manifest)


@dataclass(frozen=True)
class Benchmark:
    """A real benchmark: for each split, the ``data convert`` format and official input files that make it.

    ``aliases`` maps a split name to the one it reads (MSR-VTT 1k-A and Charades-STA have no validation
    split: as FiT and 2D-TAN, validation during training reads the test split).
    """

    name: str
    splits: dict[str, str]  # split -> "FORMAT INPUT..." of `vtp-bench data convert`
    aliases: dict[str, str] | None = None

    def __call__(self, root: Path, split: str) -> DatasetSource:
        read = (self.aliases or {}).get(split, split)
        if read not in self.splits:
            known = sorted(set(self.splits) | set(self.aliases or {}))
            raise DataNotFoundError(f"dataset {self.name!r} has no split {split!r}; its splits: {', '.join(known)}")
        manifest = root / self.name / f"{read}.jsonl"
        if not manifest.is_file():
            raise DataNotFoundError(
                f"dataset {self.name!r} split {split!r}: expected manifest {manifest} is missing; create it from "
                f"the official annotations with `vtp-bench data convert {self.splits[read]} --out {manifest} "
                f"--video-root <folder with the videos>` (or set data.root / VTP_DATA_ROOT; now {root})"
            )
        _check_video_folder(self.name, manifest)
        return DatasetSource(self.name, split, manifest)


def _check_video_folder(name: str, manifest: Path) -> None:
    """The first row's video folder must exist: a wrong video root fails here, not as N skipped videos."""
    with open(manifest, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        return
    try:
        path = resolve_path(json.loads(first)["path"], manifest)
    except (ValueError, KeyError, TypeError):
        return  # read_manifest reports the bad row with its line
    if not path.parent.is_dir():
        raise DataNotFoundError(
            f"dataset {name!r}: the videos of {manifest} are expected under {path.parent} (first row: "
            f"{path}), which does not exist; put the videos there or convert again with --video-root DIR"
        )


BENCHMARKS = [
    Benchmark("webvid", {"train": "webvid results_2M_train.csv", "val": "webvid results_2M_val.csv"}),
    Benchmark("cc3m", {"train": "cc3m cc3m_training_success_full.tsv",
                       "val": "cc3m cc3m_validation_success_full.tsv"}),
    Benchmark("msrvtt_1ka", {"train": "msrvtt MSRVTT_data.json MSRVTT_train.9k.csv",
                             "test": "msrvtt_1ka MSRVTT_JSFUSION_test.csv"}, aliases={"val": "test"}),
    Benchmark("msrvtt_full", {"train": "msrvtt MSRVTT_data.json train_list_full.txt",
                              "val": "msrvtt MSRVTT_data.json val_list_full.txt",
                              "test": "msrvtt MSRVTT_data.json test_list_full.txt"}),
    Benchmark("msvd", {s: f"msvd captions_msvd.json {s}_list.txt" for s in ("train", "val", "test")}),
    Benchmark("lsmdc", {"train": "lsmdc LSMDC16_annos_training.csv", "val": "lsmdc LSMDC16_annos_val.csv",
                        "test": "lsmdc LSMDC16_challenge_1000_publictect.csv"}),
    Benchmark("didemo", {s: f"didemo {s}_data.json {s}_list.txt" for s in ("train", "val", "test")}),
    Benchmark("didemo_grounding",
              {s: f"didemo_grounding {s}_data.json {s}_list.txt" for s in ("train", "val", "test")}),
    Benchmark("charades_sta", {s: f"charades_sta charades_sta_{s}.txt Charades_v1_{s}.csv" for s in ("train", "test")},
              aliases={"val": "test"}),
    Benchmark("activitynet", {"train": "activitynet train.json", "val": "activitynet val_2.json",
                              "test": "activitynet val_1.json"}),
    Benchmark("activitynet_grounding", {"train": "activitynet_grounding train.json",  # 2D-TAN's splits
                                        "val": "activitynet_grounding val_1.json",
                                        "test": "activitynet_grounding val_2.json"}),
    # zero-shot action recognition: the three official test splits; `test` reads split 1 (the train partitions
    # convert with --split train<K> but no experiment trains on them)
    Benchmark("hmdb51", {f"test{k}": f"hmdb51 *_test_split{k}.txt" for k in (1, 2, 3)}, aliases={"test": "test1"}),
    Benchmark("ucf101", {f"test{k}": f"ucf101 testlist0{k}.txt classInd.txt" for k in (1, 2, 3)},
              aliases={"test": "test1"}),
]
for _b in BENCHMARKS:
    DATASETS.register(_b.name)(_b)
