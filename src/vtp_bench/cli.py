"""``vtp-bench``: list | train | eval | compare | embed | search | data (synth, convert, from-folder, ...) | viz.

Errors a user can fix (unknown names or keys, missing data, unreadable checkpoints) print one message that
says what to do, with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vtp_bench.cli_args import add_checkpoint_args, add_task_args, checkpoint_overrides, image_file, task_flag_overrides
from vtp_bench.quiet import quiet_lightning, status


def _user_errors() -> tuple[type[BaseException], ...]:
    from vtp_bench.atomic import AtomicWriteError  # a file that could not be written (disk full): which and why
    from vtp_bench.config import ConfigError
    from vtp_bench.data.catalog import DataNotFoundError
    from vtp_bench.data.evalset import MissingVideosError
    from vtp_bench.data.inputs import InputError  # a method's inputs this config cannot provide (data.regions)
    from vtp_bench.data.manifest import ManifestError  # also FromFolderError
    from vtp_bench.data.video import VideoReadError
    from vtp_bench.errors import InputShapeError
    from vtp_bench.evaluate import CheckpointError, EvaluationError
    from vtp_bench.export import ExportError
    from vtp_bench.lit import NonFiniteLossError  # a loud stop with its own sentence (the step and what to check)
    from vtp_bench.registry import RegistryError
    from vtp_bench.report import ReportError  # results that cannot share a table (protocols differ, duplicates)
    from vtp_bench.train import TrainError

    return (ConfigError, RegistryError, DataNotFoundError, ManifestError, MissingVideosError, VideoReadError,
            CheckpointError, EvaluationError, TrainError, ReportError, AtomicWriteError, InputShapeError,
            InputError, ExportError, NonFiniteLossError,
            FileExistsError, NotADirectoryError, IsADirectoryError)  # an output path that is taken: one line


def cmd_list(args: argparse.Namespace) -> None:
    from vtp_bench.registry import (
        CHECKPOINT_LAYOUTS,
        DATA_FORMATS,
        DATASETS,
        ENCODERS,
        INPUTS,
        METHODS,
        TASKS,
        list_experiments,
    )

    # the names as the modules' source declares them: listing imports no torch and no model code
    print("methods:     " + ", ".join(METHODS.declared_names()))
    print("encoders:    " + ", ".join(ENCODERS.declared_names()))
    print("datasets:    " + ", ".join(DATASETS.declared_names()))
    print("tasks:       " + ", ".join(TASKS.declared_names()))
    print("checkpoints: " + ", ".join(CHECKPOINT_LAYOUTS.declared_names()))  # released layouts (--ckpt-source)
    print("formats:     " + ", ".join(DATA_FORMATS.declared_names()))  # data.format
    print("inputs:      " + ", ".join(INPUTS.declared_names()))  # per-item inputs a method reads (data_inputs)
    print("experiments: " + ", ".join(list_experiments()))
    if args.params:
        from vtp_bench.models.params import preset_param_table

        print()
        print(preset_param_table())


def cmd_train(args: argparse.Namespace) -> None:
    from vtp_bench.config import load_config
    from vtp_bench.train import TrainError, train, train_seeds

    if args.resume and "=" in args.resume and not Path(args.resume).exists():  # `--resume k=v`: a bare --resume
        args.overrides, args.resume = [*args.overrides, args.resume], "last"
    cfg = load_config(args.experiment, args.overrides)
    if args.seeds:
        if args.resume:
            raise TrainError("--seeds starts new runs; resume one seed's run with --resume and its run.version")
        for summary in train_seeds(cfg, args.seeds):
            if summary["is_global_zero"]:
                print(f"seed {summary['seed']}: ", end="")
                _print_summary(summary, cfg.eval.val_task)
        return
    summary = train(cfg, resume=args.resume, overrides=args.overrides)  # a resume keeps the run's own config
    if summary["is_global_zero"]:
        _print_summary(summary, cfg.eval.val_task)


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (inclusive) -> the training seeds of ``train --seeds``."""
    try:
        if "-" in text.strip("-"):
            lo, hi = (int(x) for x in text.split("-", 1))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give integers, e.g. 0,1,2 or 0-4") from None
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: seeds are integers in [0, 2^32), e.g. 0,1,2 or 0-4")
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give distinct integers, e.g. 0,1,2 or 0-4")
    return seeds


def _print_summary(summary: dict, val_task: str) -> None:
    from vtp_bench.registry import TASKS
    from vtp_bench.tasks.base import summary_line

    m = summary["val_metrics"]
    if m is None:
        print(f"validation: {summary['validation']}")
    elif m:  # the validation task's headline metrics, labelled as its table columns
        print(f"final validation ({val_task}): {summary_line(TASKS.get(val_task), m)}")
    print(f"run dir: {summary['run_dir']}\ncheckpoint: {summary['checkpoint']}")


def cmd_eval(args: argparse.Namespace) -> None:
    status(f"loading {args.ckpt} (the code, the model and its weights) ...")
    from vtp_bench.distributed import is_launch_rank_zero
    from vtp_bench.evaluate import evaluate_tasks
    from vtp_bench.report import format_table

    overrides = checkpoint_overrides(args) + task_flag_overrides(args)
    results = evaluate_tasks(args.ckpt, args.dataset, args.task, split=args.split, out=args.out,
                             allow_missing=args.allow_missing, overrides=overrides,
                             trust_checkpoint=args.trust_checkpoint, accelerator=args.accelerator,
                             devices=args.devices, ckpt_source=args.ckpt_source, method=args.method,
                             experiment=args.experiment, name=args.name, overwrite=args.overwrite)
    if not is_launch_rank_zero():
        return  # one table, from the launching process
    if results[0].get("checkpoint_load"):
        from vtp_bench.models.checkpoints import describe_load

        print(describe_load(results[0]["checkpoint_load"]))
    from vtp_bench.report.significance import Settings

    print(format_table(results, settings=Settings(n_boot=2_000)))  # one row: its intervals, quickly
    for result in results:
        if result.get("num_missing"):
            print(f"note: {result['num_missing']} videos were missing or unreadable and were left out of "
                  f"{result['task']}")
        if args.out:
            print(f"results written to {result.get('results_file', args.out)}")


def cmd_compare(args: argparse.Namespace) -> None:
    from vtp_bench.report import ReportError, collect_results, format_table, plot_curves, plot_results
    from vtp_bench.report.significance import Settings

    results = collect_results(args.paths)
    per_row = [f for arg in args.per_row for f in arg.split(",") if f]
    if args.n_boot < 1 or args.n_perm < 1:
        raise ReportError(f"--n-boot and --n-perm must be >= 1, got {args.n_boot} and {args.n_perm}")
    settings = Settings(n_boot=args.n_boot, n_perm=args.n_perm)
    measured = results
    if args.paper:  # the papers' numbers as labelled reference rows (report.paper)
        from vtp_bench.report.paper import paper_results

        refs, notes = paper_results(results)
        results = results + refs
        for note in notes:
            print(f"--paper: {note}", file=sys.stderr)
    print(format_table(results, args.format, split_protocols=args.split_protocols, per_row=per_row,
                       settings=settings), end="")
    if args.plot:
        bars, curves = plot_results(measured, args.plot), plot_curves(measured, args.plot)
        print(f"plots written to {bars}" + (f" and {curves}" if curves else " (no training curves: no run dir with "
                                            "metrics.csv beside the checkpoints)"), file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> None:
    from vtp_bench.export import export

    out = export(args.ckpt, args.out, args.results, overwrite=args.overwrite, method=args.method,
                 trust=args.trust_checkpoint)
    print(f"exported to {out}: model.safetensors, config.yaml, README.md (vtp_bench.load(\"{out}\"))")


def build_parser() -> argparse.ArgumentParser:
    from vtp_bench import __version__

    p = argparse.ArgumentParser(prog="vtp-bench", description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--version", action="version", version=f"vtp-bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="registered methods, encoders, datasets and experiments")
    s.add_argument("--params", action="store_true",
                   help="also print parameter counts of the encoder presets (and of full CLIP models)")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("train", help="train an experiment: vtp-bench train EXP [key=value ...]")
    s.add_argument("experiment", help="name in experiments/ or a path to a yaml file")
    s.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, e.g. trainer.max_steps=20 data.batch_size=8")
    s.add_argument("--resume", metavar="CKPT", nargs="?", const="last", default=None,
                   help="resume from a checkpoint path, or (no value) from last.ckpt of run.version, or of the "
                        "newest run when run.version is not set: same config (the run's config.yaml), data order, "
                        "optimizer, scheduler, RNG and method state; the run continues in the checkpoint's run dir. "
                        "Overrides that change the run's config are refused, except trainer.max_steps, "
                        "trainer.max_epochs, trainer.devices, trainer.num_nodes, data.num_workers (recorded in "
                        "resumes.jsonl)")
    s.add_argument("--seeds", type=_seed_list, default=None, metavar="0,1,2",
                   help="one run per training seed (0,1,2 or 0-4), in run dirs <run.version>-seed<k> (seed<k> when no "
                        "run.version is set); `compare` folds their results into one row with a seeds column")
    s.add_argument("--verbose", action="store_true", help="also print Lightning's accelerator banner and notes, "
                   "and the model summary (always written to <run dir>/model_summary.txt)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="score a checkpoint on a dataset split")
    add_checkpoint_args(s, "score")
    add_task_args(s)
    s.add_argument("--out", default=None, help="write the results JSON here; an existing file is refused before "
                   "scoring unless --overwrite, and if another run writes it meanwhile, these results go to "
                   "<stem>.<n>.json beside it")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("compare", help="one table from result files or run dirs")
    s.add_argument("paths", nargs="+")
    s.add_argument("--format", choices=["markdown", "csv", "latex"], default="markdown",
                   help="markdown (value ±half-width of its 95 %% interval; rows not significantly worse than the "
                        "best in bold), csv (a trailing *, <col>_lo / <col>_hi, footer as # lines), latex (booktabs, "
                        "\\textbf, footer as %% lines)")
    s.add_argument("--n-boot", type=int, default=10_000, metavar="N",
                   help="bootstrap resamples of each interval (default 10000)")
    s.add_argument("--n-perm", type=int, default=10_000, metavar="N",
                   help="random sign flips of each paired permutation test (default 10000; exact below 2^n)")
    s.add_argument("--paper", action="store_true",
                   help="add each method's reported numbers (its paper, as its card in docs/methods/ says) on the "
                        "same benchmarks as labelled rows, never marked best")
    s.add_argument("--split-protocols", action="store_true",
                   help="results of one dataset/split/task scored under different protocols (frames, sampler, "
                        "v2t policy, ...): one table per protocol instead of refusing")
    s.add_argument("--per-row", action="append", default=[], metavar="FIELD[,FIELD]",
                   help="protocol fields allowed to differ between rows, shown as a column (e.g. frames: each "
                        "method at its own frame count)")
    s.add_argument("--plot", default=None, metavar="FILE.png", type=image_file,
                   help="also write FILE.png (main metric per method and dataset, chance drawn) and FILE_curves.png "
                        "(training curves from the runs' metrics.csv)")
    s.set_defaults(func=cmd_compare)

    from vtp_bench.cli_data import add_data_parser
    from vtp_bench.cli_embed import add_embed_parsers
    from vtp_bench.viz import add_viz_parser

    add_embed_parsers(sub)
    s = sub.add_parser("export", help="a checkpoint as a shareable folder: model.safetensors, config.yaml, README.md")
    s.add_argument("--ckpt", required=True, help="a vtp_bench .ckpt (or a released file with --method)")
    s.add_argument("--out", required=True, help="the folder to write (vtp_bench.load / eval --ckpt / embed read it)")
    s.add_argument("--results", action="append", default=[], metavar="FILE.json",
                   help="results of `vtp-bench eval` on this checkpoint, shown in the model card (repeatable)")
    s.add_argument("--method", default=None, help="the method to build for a released file")
    s.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary unpickling (trusted files only)")
    s.add_argument("--overwrite", action="store_true", help="replace the files of an existing export")
    s.set_defaults(func=cmd_export)
    add_data_parser(sub)
    add_viz_parser(sub)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """argparse, with ``key=value`` overrides anywhere after the command (``train EXP --verbose k=v``): argparse
    takes the positionals of a subcommand in one run, so overrides after an option come back unrecognized."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_lightning(verbose=getattr(args, "verbose", False))
    try:
        code = args.func(args)  # a command may return its exit status (data check: 1 when videos are bad)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vtp-bench list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
