"""Data formats are registered readers (``data/formats/``): the DataModule takes the one ``data.format`` names, an
unknown name is refused with the known ones, and the training loaders resume in Lightning's sense (the data position
is the DataModule's state). Reading from shards (training and evaluation) is checked in test_shards.py."""

from __future__ import annotations

import pytest
from lightning.fabric.utilities.types import _Stateful

from conftest import tiny_config
from vtp_bench.config import ConfigError
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.data.formats.files import Files
from vtp_bench.data.formats.webdataset import WebDataset
from vtp_bench.data.manifest import ManifestRow, write_manifest
from vtp_bench.registry import DATA_FORMATS, RegistryError


def test_the_data_module_reads_the_format_registered_under_data_format(monkeypatch):
    assert isinstance(VideoTextDataModule(tiny_config("frozen")).format, Files)
    dm = VideoTextDataModule(tiny_config("frozen", "data.format=webdataset"))
    assert isinstance(dm.format, WebDataset) and isinstance(dm.eval_format, Files)  # evaluation: the files
    assert isinstance(VideoTextDataModule(tiny_config("frozen", "data.eval_format=webdataset")).eval_format, WebDataset)

    class Mine(Files):  # a format of one's own: one class, registered (a file in data/formats/ or a plugin)
        name = "mine"

    DATA_FORMATS.names()  # the package's formats are loaded; the test's own entry is removed afterwards
    monkeypatch.setitem(DATA_FORMATS._entries, "mine", Mine)
    dm = VideoTextDataModule(tiny_config("frozen", "data.format=mine"))
    assert type(dm.format) is Mine and dm.format.record() == {"data_format": "mine", "decoder": "pyav"}


def test_an_unknown_format_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"'data.format': 'tar'; it must be a registered data format: files, "
                                          r"webdataset"):
        tiny_config("frozen", "data.format=tar")
    with pytest.raises(RegistryError, match="unknown data format 'tar'; known data formats: files, webdataset"):
        DATA_FORMATS.get("tar")


def test_the_training_loader_is_resumable_from_the_data_modules_state(tmp_path):
    """Lightning warns that a loader "is not resumable" on a mid-epoch resume unless the loader has ``state_dict`` /
    ``load_state_dict`` (its ``_Stateful`` check); the position itself is the DataModule's state, read once."""
    manifest = tmp_path / "mine" / "train.jsonl"
    manifest.parent.mkdir()
    write_manifest(manifest, [ManifestRow(f"v{i}", f"v{i}.mp4", f"caption {i}", f"t{i}", "train") for i in range(12)])
    dm = VideoTextDataModule(tiny_config("frozen", "data.batch_size=4", f"data.train=['{manifest}']"))
    dm.train_set = dm.format.train_set(dm.train_transform, dm.decode, None)
    assert dm.state_dict() == {}  # no training under way: nothing to record
    dm.load_state_dict({"epoch": 1, "batches": 2})  # as Lightning restores a checkpoint, before the loader is made
    loader = dm.train_dataloader()
    assert isinstance(loader, _Stateful) and len(loader) == 3
    sampler = loader.batch_sampler
    assert (sampler.epoch, sampler.skip_batches, dm.train_set.parts[0].epoch) == (1, 2, 1)
    assert len(list(sampler)) == 1  # the epoch's last batch: the two before it were trained on
    assert dm.resume_from is None and dm.train_dataloader().batch_sampler.skip_batches == 0  # read once
    loader.load_state_dict({"epoch": 1, "batches": 3})  # saved after the epoch's last batch: the next epoch
    assert (sampler.epoch, sampler.skip_batches) == (2, 0)


def test_a_checkpoint_of_earlier_versions_resumes_from_its_data_position():
    """Checkpoints written before the DataModule kept the position hold it as ``vtp_data_position``: read as the
    DataModule's state when the checkpoint has none of its own."""
    from types import SimpleNamespace

    from vtp_bench.lit import VTPModule

    module = VTPModule(tiny_config("frozen"))
    dm = VideoTextDataModule(module.cfg)
    module._trainer = SimpleNamespace(datamodule=dm, state=SimpleNamespace(fn="fit"))
    module.on_load_checkpoint({"vtp_data_position": {"epoch": 1, "batches": 5}})
    assert dm.resume_from == {"epoch": 1, "batches": 5}
    dm.resume_from = None
    module.on_load_checkpoint({"vtp_data_position": {"epoch": 1, "batches": 5},
                               "VideoTextDataModule": {"epoch": 1, "batches": 6}})
    assert dm.resume_from is None  # Lightning hands the DataModule its own state (restore_datamodule)
