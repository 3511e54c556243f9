"""The arguments of every command that loads a checkpoint and reads a dataset split (``eval``, ``embed``): one
definition, so a released checkpoint loads the same way whatever the command."""

from __future__ import annotations

import argparse
from dataclasses import fields

from vtp_bench.choices import TEMPORAL_FIXES


def add_checkpoint_args(s: argparse.ArgumentParser, verb: str) -> None:
    """``--ckpt`` and its loading options, the dataset and split, devices and ``key=value`` overrides."""
    s.add_argument("--ckpt", required=True, help="the checkpoint to load: a vtp_bench run's .ckpt (it rebuilds its "
                   "own model), or released weights (Frozen-in-Time, MILES, RegionLearner, CLIP) with --method or "
                   "--experiment")
    s.add_argument("--dataset", required=True, help="a registered dataset name (e.g. synth, msrvtt_1ka), or your own "
                   "data: a manifest .jsonl or a folder of <split>.jsonl files")
    s.add_argument("--name", default=None, help="the name of a dataset given as a path, in results and tables "
                   "(default: the file's or folder's stem; the folder's for a file named by its split, e.g. "
                   "mydata/test.jsonl -> mydata)")
    s.add_argument("--split", default=None, help="default: the task's split for the dataset (test; the "
                   "synthetic dataset's held-out grounding videos for --task grounding, mc_test for --task "
                   "multiple_choice)")
    s.add_argument("--data-root", default=None, help="override data.root of the checkpoint's config")
    s.add_argument("--allow-missing", action="store_true", help=f"{verb} the videos that exist; count the rest")
    s.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary unpickling (trusted files only)")
    s.add_argument("--ckpt-source", default=None,
                   help="released checkpoint layout (`vtp-bench list` shows them: frozen (also MILES, RegionLearner), "
                        "demovlp, clip4clip, promptswitch, openai, open_clip, hf_clip, vtp_bench); detected from "
                        "the keys when not given")
    s.add_argument("--ckpt-non-strict", action="store_true",
                   help="released checkpoint: keys the model has no place for (e.g. RegionLearner's quantizer when "
                        "scoring with --method frozen) are listed instead of refused")
    s.add_argument("--temporal-fix", choices=TEMPORAL_FIXES, default=None,
                   help="released checkpoint with fewer frames than the model: how temporal_embed grows (zeros)")
    s.add_argument("--method", default=None, help="for a released checkpoint: build this method at its defaults")
    s.add_argument("--experiment", default=None, help="for a released checkpoint: build this experiment's model")
    s.add_argument("--accelerator", default="auto", help="cpu | gpu | auto")
    s.add_argument("--devices", type=int, default=1, help=f"{verb} on N devices (DDP): sharded, no padding")
    s.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, e.g. data.num_workers=0")


def checkpoint_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides those options stand for, after the user's own ``key=value`` ones."""
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.ckpt_non_strict:
        overrides.append("init.strict=false")
    if args.temporal_fix:
        overrides.append(f"init.temporal_fix={args.temporal_fix}")
    return overrides


def at_least(low: float, kind: type = int, high: float | None = None):
    """An argparse ``type``: a number of ``kind`` in [low, high], refused by argparse (usage + one line) otherwise."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value != value or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a value >= {low}"
                                             + (f" and <= {high}" if high is not None else ""))
        return value

    return parse


IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def image_file(text: str) -> str:
    """An argparse ``type``: a file name matplotlib can write."""
    from pathlib import Path

    if Path(text).suffix.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: give an image file name ending in {', '.join(IMAGE_SUFFIXES)}")
    return text


def _task_flags() -> list[tuple[str, str, dict]]:
    """(task, config field, its metadata) of every registered task option made with ``choice(..., flag=...)``."""
    from vtp_bench.registry import TASKS

    return [(name, f.name, dict(f.metadata)) for name in TASKS.names() for f in fields(TASKS.get(name).Config)
            if f.metadata.get("flag")]


def add_task_args(s: argparse.ArgumentParser) -> None:
    """``--task`` and the flags the registered tasks declare (each a shortcut of ``eval.<task>.<field>=VALUE``)."""
    from vtp_bench.registry import TASKS

    known = TASKS.names()

    def task_list(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in names if t not in known]
        if bad or not names or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"{text!r}: give registered tasks ({', '.join(known)}), each once, "
                                             "separated by commas")
        return names

    s.add_argument("--task", default=["retrieval"], type=task_list, metavar="TASK[,TASK...]",
                   help=f"the evaluation task(s): {' | '.join(known)} (default retrieval); several, e.g. "
                        "retrieval,zeroshot_cls, share their clips (each decoded and encoded once) and write one "
                        "results JSON each (--out X.json: X.<task>.json)")
    for task, name, meta in _task_flags():
        s.add_argument(meta["flag"], dest=f"task__{task}__{name}", choices=meta["choices"], default=None,
                       help=f"{task}: {meta.get('help', '')} (eval.{task}.{name})")


def task_flag_overrides(args: argparse.Namespace) -> list[str]:
    """The task flags given, as ``eval.<task>.<field>=VALUE`` overrides; a flag of another task than ``--task`` is
    refused (it would be silently ignored)."""
    given = [(task, name, meta) for task, name, meta in _task_flags()
             if getattr(args, f"task__{task}__{name}", None) is not None]
    other = [(task, meta["flag"]) for task, _, meta in given if task not in args.task]
    if other:
        from vtp_bench.errors import ConfigError

        raise ConfigError(f"{other[0][1]} is an option of --task {other[0][0]}; --task {','.join(args.task)} does "
                          "not read it")
    return [f"eval.{task}.{name}={getattr(args, f'task__{task}__{name}')}" for task, name, _ in given]
