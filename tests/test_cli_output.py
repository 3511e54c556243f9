"""What the commands print: none of Lightning's chatter (while warnings that matter still show), the model summary
in the run dir (on the console with ``train --verbose``), progress lines, help texts with defaults, a quick list."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from helpers.runs import frozen_tiny
from vtp_bench.cli import main
from vtp_bench.data.synthetic import generate_synthetic

TINY = frozen_tiny()
CHATTER = ("💡 Tip", "litlogger", "LeafSpec", "GPU available: False", "TPU available", "Total params",
           "Trainable params", "Seed set to", "to estimate number of stepping batches")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run(argv: list[str], capsys) -> str:
    """Everything ``main(argv)`` shows: stdout, stderr, Lightning's log records (its loggers may not propagate to
    the root logger, so caplog would miss them) and the warnings it raises."""
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(argv) == 0
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    out = capsys.readouterr()
    return "\n".join([out.out, out.err, *handler.messages, *(str(w.message) for w in caught)])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root / "synth", num_videos=16, seed=1, grounding_videos=0, progress=False)
    return root


def test_train_and_eval_print_no_lightning_chatter(data_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    shown = _run(["train", "frozen_synth", *TINY, "trainer.max_steps=2", f"data.root={data_root}",
                  f"run.dir={runs}", "run.version=q"], capsys)
    for text in CHATTER:
        assert text not in shown, text
    assert "`Trainer.fit` stopped: `max_steps=2` reached." in shown  # Lightning's other messages still show
    assert "No training video was skipped." in shown
    run = runs / "frozen_synth" / "q"
    assert "Trainable params" in (run / "model_summary.txt").read_text()  # the summary went to the run dir
    shown = _run(["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--dataset", "synth", "--split", "val",
                  "--data-root", str(data_root)], capsys)
    for text in CHATTER:
        assert text not in shown, text
    assert "loading " in shown and "encoding synth (retrieval on split val) with frozen" in shown  # progress
    # a warning that matters to a user is not filtered
    from lightning.fabric.utilities.warnings import PossibleUserWarning
    from lightning.pytorch.utilities import rank_zero_warn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from vtp_bench.quiet import quiet_lightning

        quiet_lightning()
        rank_zero_warn("The 'train_dataloader' does not have many workers", category=PossibleUserWarning)
    assert [str(w.message) for w in caught] == ["The 'train_dataloader' does not have many workers"]


def test_train_verbose_prints_the_model_summary_and_banner(data_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    shown = _run(["train", "--verbose", "frozen_synth", *TINY, "trainer.max_steps=1", f"data.root={data_root}",
                  f"run.dir={runs}", "run.version=v"], capsys)
    assert "Trainable params" in shown and "GPU available: False" in shown
    assert "litlogger" not in shown and "LeafSpec" not in shown  # an advert and torch's internals: never
    assert (runs / "frozen_synth" / "v" / "model_summary.txt").is_file()
    main(["list"])  # a later command is quiet again
    capsys.readouterr()
    from vtp_bench.quiet import is_verbose

    assert not is_verbose()


def test_list_imports_no_torch_and_names_every_registered_entry():
    """``vtp-bench list`` reads the names from the source (it took 4-8 s importing torch and every model); what it
    prints is exactly what importing the modules registers."""
    code = ("import sys; from vtp_bench.cli import main; main(['list']); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "no torch"
    from vtp_bench.config import list_experiments
    from vtp_bench.registry import CHECKPOINT_LAYOUTS, DATA_FORMATS, DATASETS, ENCODERS, INPUTS, METHODS, TASKS

    shown = {line.split(":")[0]: line.split(":", 1)[1].strip().split(", ") for line in lines[:-1]}
    package = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("vtp_bench.")]
    assert shown == {"methods": package, "encoders": ENCODERS.names(), "datasets": DATASETS.names(),
                     "tasks": TASKS.names(), "checkpoints": CHECKPOINT_LAYOUTS.names(),
                     "formats": DATA_FORMATS.names(), "inputs": INPUTS.names(), "experiments": list_experiments()}


def test_list_shows_plugins(tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text("from vtp_bench.registry import METHODS\n\n\n@METHODS.register('mine')\nclass Mine:\n"
                      "    pass\n")
    env = {**os.environ, "VTP_PLUGINS": str(plugin)}
    r = subprocess.run([sys.executable, "-m", "vtp_bench.cli", "list"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "mine" in r.stdout.splitlines()[0].split(": ")[1].split(", ")


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _options(help_text: str) -> dict[str, str]:
    """``--flag`` -> its description in an argparse help text (empty when it has none)."""
    entries: dict[str, str] = {}
    flag = None
    for line in help_text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            head, _, desc = line.strip().partition("  ")
            flag = next((w.rstrip(",") for w in head.split() if w.startswith("--")), head.split()[0].rstrip(","))
            entries[flag] = desc.strip()
        elif flag and line.startswith("    "):
            entries[flag] = (entries[flag] + " " + line.strip()).strip()
    return entries


def test_help_describes_every_option_with_its_default(capsys):
    synth = _options(_help(["data", "synth"], capsys))
    assert set(synth) == {"--help", "--out", "--videos", "--seed", "--grounding-videos", "--splits"}
    assert all(synth.values()), synth
    for flag, default in (("--videos", "1000"), ("--seed", "0"), ("--grounding-videos", "40"),
                          ("--splits", "0.8,0.1,0.1")):
        assert f"(default {default})" in synth[flag], flag
    compress = _options(_help(["data", "compress"], capsys))
    assert all(compress.values()), compress
    assert "(default 224)" in compress["--short-side"] and "(default 23)" in compress["--crf"]
    for command in ("eval", "embed"):
        options = _options(_help([command], capsys))
        assert options["--ckpt"] and all(options.values()), (command, options)
    assert "default retrieval" in _options(_help(["eval"], capsys))["--task"]
    top = _help([], capsys)
    assert "cli_data" not in top and "``" not in top


def test_overrides_may_follow_an_option_and_a_bare_resume():
    from vtp_bench.cli import parse_args

    args = parse_args(["train", "frozen_synth", "a.b=1", "--verbose", "c.d=2", "e.f=3"])
    assert args.verbose and args.overrides == ["a.b=1", "c.d=2", "e.f=3"]
    assert parse_args(["eval", "--ckpt", "x.ckpt", "k=v", "--dataset", "synth", "m=n"]).overrides == ["k=v", "m=n"]
    with pytest.raises(SystemExit):
        parse_args(["train", "frozen_synth", "--bogus", "a.b=1"])
    with pytest.raises(SystemExit):
        parse_args(["list", "a.b=1"])  # list takes no overrides


def test_resume_followed_by_an_override_is_a_bare_resume(monkeypatch):
    import vtp_bench.train as train_mod
    from vtp_bench.cli import main

    seen = {}
    monkeypatch.setattr(train_mod, "train", lambda cfg, resume, overrides: seen.update(resume=resume, o=overrides)
                        or {"is_global_zero": False})
    assert main(["train", "frozen_synth", "--resume", "trainer.max_steps=6"]) == 0
    assert seen == {"resume": "last", "o": ["trainer.max_steps=6"]}


def test_option_values_out_of_range_are_refused_by_argparse(tmp_path, capsys):
    """Were tracebacks (faiss asserting, a 0 shard size, matplotlib on a .txt plot, a negative seed)."""
    for argv in (["train", "frozen_synth", "--seeds", "-1"], ["data", "shard", "x.jsonl", "--shard-size", "0"],
                 ["data", "compress", "x.jsonl", "--out-dir", "o", "--max-fps", "0"],
                 ["data", "compress", "x.jsonl", "--out-dir", "o", "--crf", "99"],
                 ["data", "check", "x.jsonl", "--workers", "-2"],
                 ["search", "--index", "x", "-q", "a", "--nprobe", "0"],
                 ["search", "--index", "x", "-q", "a", "--hnsw-m", "0"], ["compare", "x.json", "--plot", "x.txt"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err
        assert "error: argument" in err and "Traceback" not in err, argv


def test_resume_from_a_torn_or_foreign_file_is_a_sentence(tmp_path, capsys):
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    assert main(["train", "frozen_synth", "--resume", str(torn)]) == 2
    err = capsys.readouterr().err
    assert f"--resume {torn}: cannot read checkpoint" in err and "another checkpoint of the run" in err
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert main(["train", "frozen_synth", "--resume", str(run)]) == 2  # a run dir: its checkpoints/last.ckpt
    assert "no such checkpoint file (give a .ckpt, or a run dir" in capsys.readouterr().err


def test_embed_out_that_is_a_folder_is_refused_before_anything_runs(tmp_path, capsys):
    assert main(["embed", "--ckpt", str(tmp_path / "none.ckpt"), "--dataset", "synth", "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
