"""``vtp-bench data``: synth | convert | from-folder | check | compress | shard: the tools that make datasets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vtp_bench.cli_args import at_least


def cmd_synth(args: argparse.Namespace) -> None:
    from vtp_bench.config import ConfigError
    from vtp_bench.data.synthetic import generate_synthetic

    try:
        summary = generate_synthetic(Path(args.out), num_videos=args.videos, seed=args.seed,
                                     grounding_videos=args.grounding_videos, splits=args.splits)
    except ValueError as e:  # counts or splits that cannot be generated: a sentence, not a traceback
        raise ConfigError(f"data synth: {e}") from None
    empty = [k for k in ("train", "val", "test") if not summary["counts"].get(k)]
    if empty:
        print(f"WARNING: the {', '.join(empty)} split(s) of {args.out} hold no video ({args.videos} videos split "
              f"{args.splits}): training needs train and val, evaluation test; give more --videos or --splits "
              "with a count per split", file=sys.stderr)
    print(json.dumps(summary, indent=2, default=str))


def _splits(text: str) -> tuple[float, ...] | tuple[int, ...]:
    parts = text.split(",")
    try:
        if all(p.strip().isdigit() for p in parts):
            return tuple(int(p) for p in parts)
        return tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--splits {text!r}: three counts (700,100,500) or fractions "
                                         "(0.8,0.1,0.1)") from None


def cmd_convert(args: argparse.Namespace) -> None:
    from vtp_bench.data.convert.base import CONVERTERS, place_videos
    from vtp_bench.data.manifest import write_manifest

    conv = CONVERTERS.get(args.format)
    result = conv([Path(p) for p in args.inputs], args.split)
    out = Path(args.out)
    rows, missing = place_videos(result.rows, out, Path(args.video_root) if args.video_root else None)
    write_manifest(out, rows)
    videos = len({r.video_id for r in rows})
    print(f"{args.format}: {len(rows)} rows, {videos} videos, split {sorted({r.split for r in rows})} -> {out}")
    if result.dropped:
        print(f"dropped {len(result.dropped)} row(s) that the protocol leaves out:")
        for d in result.dropped[:10]:
            print(f"  {d}")
    if args.video_root is None and not all(Path(r.path).is_absolute() for r in result.rows):
        print(f"videos are expected under {out.parent / 'videos'} (or pass --video-root DIR to resolve them)")
    elif missing:
        print(f"warning: {len(missing)} of {videos} videos were not found under {args.video_root} "
              f"(e.g. {missing[0]}); `vtp-bench data check {out}` lists them")


def cmd_check(args: argparse.Namespace) -> int:
    from vtp_bench.data.catalog import is_path, locate
    from vtp_bench.data.check import check_manifest

    manifest = Path(args.manifest)
    if not is_path(args.manifest) and not manifest.is_file():  # a registered dataset name
        import os

        manifest = locate(args.manifest, args.data_root or os.environ.get("VTP_DATA_ROOT", "data"), args.split).manifest
    report = check_manifest(manifest, out=Path(args.out) if args.out else None,
                            min_frames=args.min_frames, workers=args.workers, video_root=args.video_root)
    print(report.summary())
    if args.report:
        from vtp_bench.atomic import atomic_write_text

        atomic_write_text(args.report, json.dumps(report.to_dict(), indent=2))
        print(f"report written to {args.report}")
    return 1 if report.problems and not args.out else 0  # a gate; with --out the written manifest is the clean one


def cmd_from_folder(args: argparse.Namespace) -> None:
    from vtp_bench.data.from_folder import manifest_from_folder
    from vtp_bench.data.manifest import write_manifest

    out = Path(args.out)
    report = manifest_from_folder(Path(args.videos), Path(args.captions) if args.captions else None, out,
                                  split=args.split, allow_missing=args.allow_missing)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out, report.rows)
    print(f"{report.videos} videos, {len(report.rows)} captions (split {args.split}) -> {out}")
    for problem in report.problems():
        print(f"left out (--allow-missing): {problem}")
    print(f"use it as a dataset: vtp-bench eval --dataset {out} --ckpt ...  (or data.train=[{out}])")


def cmd_compress(args: argparse.Namespace) -> None:
    from vtp_bench.data.compress import compress_manifest
    from vtp_bench.data.manifest import ManifestError

    if Path(args.out_dir).resolve() == Path(args.manifest).resolve().parent:
        raise ManifestError(f"--out-dir {args.out_dir} is the folder of {args.manifest}: the new manifest would "
                            "replace it; choose another folder")

    summary = compress_manifest(Path(args.manifest), Path(args.out_dir), short_side=args.short_side,
                                max_fps=args.max_fps, gop=args.gop, crf=args.crf, workers=args.workers,
                                video_root=args.video_root)
    print(summary)


def cmd_shard(args: argparse.Namespace) -> None:
    from vtp_bench.data.shard_write import default_shard_dir, write_shards

    manifest = Path(args.manifest)
    out = Path(args.out) if args.out else default_shard_dir(manifest)
    index = write_shards(manifest, out, shard_size=args.shard_size,
                         video_root=Path(args.video_root) if args.video_root else None,
                         once_per_video=args.once_per_video)
    print(f"{index['samples']} samples in {len(index['shards'])} shard(s) -> {out} (index: {out / 'index.json'})")
    if index["missing"]:
        print(f"warning: {len(index['missing'])} row(s) left out, their video file is missing "
              f"(e.g. {index['missing'][0]}); `vtp-bench data check {manifest}` lists them")
    print("read them with data.format=webdataset: training and evaluation read <data.root>/<name>/shards/<split>/ "
          "(docs/data_shards.md)")


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    from vtp_bench.data.convert.base import CONVERTERS

    s = sub.add_parser("data", help="data tools: synth | convert | from-folder | check | compress | shard")
    dsub = s.add_subparsers(dest="data_command", required=True)

    d = dsub.add_parser("synth", help="generate the synthetic video-text dataset",
                        description="Coloured shapes moving on a textured background (H.264 mp4) with captions "
                        "that describe them; no download. Writes OUT/{train,val,test}.jsonl, the grounding splits, "
                        "classes.json and the videos.")
    d.add_argument("--out", required=True, help="the dataset folder (e.g. data/synth, where the *_synth experiments "
                   "look); an earlier synthetic dataset there is regenerated, any other non-empty folder refused")
    d.add_argument("--videos", type=int, default=1000, help="clips of train, val and test together (default "
                   "%(default)s)")
    d.add_argument("--seed", type=int, default=0, help="the same seed writes byte-identical manifests and videos "
                   "(default %(default)s)")
    d.add_argument("--grounding-videos", type=int, default=40, help="longer videos with timed queries, for "
                   "--task grounding and grounding heads (default %(default)s)")
    d.add_argument("--splits", type=_splits, default=(0.8, 0.1, 0.1), metavar="TRAIN,VAL,TEST",
                   help="video counts summing to --videos (e.g. 700,100,500: a test split large enough for narrow "
                        "intervals) or fractions summing to 1 (default 0.8,0.1,0.1)")
    d.set_defaults(func=cmd_synth)

    formats = "\n".join(f"  {n:<22} {' '.join(CONVERTERS.get(n).inputs):<50} {CONVERTERS.get(n).description}"
                        for n in CONVERTERS.names())
    d = dsub.add_parser("convert", help="official annotation files -> a manifest",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=f"formats and their inputs:\n{formats}")
    d.add_argument("format", help="one of: " + ", ".join(CONVERTERS.names()))
    d.add_argument("inputs", nargs="+", help="the official annotation file(s), as the format lists them")
    d.add_argument("--out", required=True, help="the manifest to write (.jsonl)")
    d.add_argument("--video-root", default=None, help="where the videos are: each one is looked up there")
    d.add_argument("--split", default=None, help="split name of the rows (default: from the file names)")
    d.set_defaults(func=cmd_convert)

    d = dsub.add_parser("from-folder", help="a manifest from a folder of your videos and their captions")
    d.add_argument("videos", help="folder of video files (searched recursively)")
    d.add_argument("--captions", default=None, help="CSV with video,caption columns (several rows per video "
                   "allowed), or JSON {video: [captions]}; default: a .txt next to each video, one caption a line")
    d.add_argument("--out", required=True, help="the manifest to write (.jsonl)")
    d.add_argument("--split", default="test", help="the split of the rows (default %(default)s)")
    d.add_argument("--allow-missing", action="store_true",
                   help="write the manifest even if some videos have no caption or some captions no video "
                        "(they are listed and counted)")
    d.set_defaults(func=cmd_from_folder)

    d = dsub.add_parser("check", help="open every video of a manifest in parallel; write a cleaned manifest")
    d.add_argument("manifest", help="a manifest .jsonl, or a registered dataset name (with --split)")
    d.add_argument("--split", default="test", help="the split of a dataset given by name")
    d.add_argument("--data-root", default=None, help="where registered datasets live (default $VTP_DATA_ROOT or data)")
    d.add_argument("--out", default=None, help="write the rows whose video is readable here")
    d.add_argument("--report", default=None, help="write the per-video problems as JSON here")
    d.add_argument("--min-frames", type=at_least(1), default=1,
                   help="videos (or windows) with fewer frames are too short (default %(default)s)")
    d.add_argument("--workers", type=at_least(1), default=None, help="processes (default: all CPU cores)")
    d.add_argument("--video-root", default=None, help="resolve relative paths here instead of the manifest dir")
    d.set_defaults(func=cmd_check)

    d = dsub.add_parser("compress", help="re-encode a manifest's videos once: short side, fps cap, short GOP")
    d.add_argument("manifest", help="the manifest .jsonl whose videos to re-encode")
    d.add_argument("--out-dir", required=True, help="videos/ and the new manifest go here (resumable)")
    d.add_argument("--short-side", type=at_least(16), default=224, help="scale to this short side in pixels (default "
                   "%(default)s)")
    d.add_argument("--max-fps", type=at_least(0.1, float), default=None,
                   help="drop frames above this rate (default: keep)")
    d.add_argument("--gop", type=int, default=8, help="keyframe every N frames: short GOPs seek fast (default "
                   "%(default)s)")
    d.add_argument("--crf", type=at_least(0, int, 51), default=23,
                   help="H.264 quality, 0-51: lower is better and larger (default "
                   "%(default)s)")
    d.add_argument("--workers", type=at_least(1), default=None, help="processes (default: all CPU cores)")
    d.add_argument("--video-root", default=None, help="resolve relative paths here instead of the manifest dir")
    d.set_defaults(func=cmd_compress)

    d = dsub.add_parser("shard", help="a manifest's videos and captions -> WebDataset tar shards (+ index.json)")
    d.add_argument("manifest", help="the manifest .jsonl whose videos and captions to pack")
    d.add_argument("--out", default=None, help="folder of the shards (default: <manifest dir>/shards/<manifest "
                   "stem>/, where data.format=webdataset looks for them)")
    d.add_argument("--shard-size", type=at_least(1), default=1000, help="samples per shard (default %(default)s)")
    d.add_argument("--video-root", default=None, help="resolve relative paths here instead of the manifest dir")
    d.add_argument("--once-per-video", action="store_true",
                   help="store each video once (its first row), not once per caption: for a val/test split, which "
                   "evaluation reads by video (training reads one sample per row: leave it off there)")
    d.set_defaults(func=cmd_shard)
