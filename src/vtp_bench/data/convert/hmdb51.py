"""HMDB51: the official ``testTrainMulti_7030_splits`` files, for zero-shot action recognition.

One file per class and split, ``<class>_test_split<K>.txt`` (K = 1, 2, 3), each line ``<file>.avi <id>`` with
id 1 = training, 2 = testing, 0 = not used in that split (70 train / 30 test videos per class: 3,570 / 1,530 over
the 51 classes). Give the 51 files of one split (``*_test_split1.txt``); the class is the file name's prefix.

One row per video of the chosen partition: ``path`` = ``<class>/<file>.avi`` (the layout of the extracted
``hmdb51_org/`` folders), ``label`` = the official class name (``brush_hair``), ``text`` = its readable name
(``brush hair``), which the zero-shot task puts in the prompt template. The partition comes from ``--split``:
``test`` (the default) or ``train``, optionally with the split number (``test2``); the manifest's split is
``test<K>`` / ``train<K>``, K from the file names (all files must belong to one split).
"""

from __future__ import annotations

import re
from pathlib import Path

from vtp_bench.data.convert.base import Converted, ConvertError, bad_line, converter, read_text_lines
from vtp_bench.data.manifest import ManifestRow

PARTITION_IDS = {"train": "1", "test": "2"}
_NAME = re.compile(r"(?P<cls>.+)_test_split(?P<k>\d+)\.txt")


def readable_name(cls: str) -> str:
    """``brush_hair`` -> ``brush hair``."""
    return cls.replace("_", " ").strip()


def _partition(split: str | None, k: int) -> tuple[str, str]:
    """(``train``|``test``, manifest split name) from ``--split``; a split number must match the files'."""
    m = re.fullmatch(r"(train|test)(\d*)", (split or "test").lower())
    if not m:
        raise ConvertError(f"hmdb51: --split must be train or test (optionally with the split number, e.g. "
                           f"test1), got {split!r}")
    if m.group(2) and int(m.group(2)) != k:
        raise ConvertError(f"hmdb51: --split {split} names split {int(m.group(2))}, but the files are "
                           f"*_test_split{k}.txt")
    return m.group(1), f"{m.group(1)}{k}"


@converter("hmdb51", inputs=("CLASS_test_splitK.txt...",), variadic=True)
def convert(inputs: list[Path], split: str | None) -> Converted:
    """HMDB51 (zero-shot action recognition): one official split's train or test videos, one file per class."""
    parsed = []
    for path in inputs:
        m = _NAME.fullmatch(path.name)
        if not m:
            raise ConvertError(f"{path}: not an HMDB51 split file (expected <class>_test_split<K>.txt, e.g. "
                               f"brush_hair_test_split1.txt)")
        parsed.append((path, m.group("cls"), int(m.group("k"))))
    ks = sorted({k for _, _, k in parsed})
    if len(ks) > 1:
        raise ConvertError(f"hmdb51: the files mix splits {ks}; give the files of one split (*_test_split1.txt)")
    partition, split_name = _partition(split, ks[0])
    want = PARTITION_IDS[partition]
    rows, seen, classes = [], {}, {}
    for path, cls, _ in parsed:
        if cls in classes:
            raise ConvertError(f"hmdb51: class {cls!r} is given twice ({classes[cls]} and {path})")
        classes[cls] = path
        for lineno, line in read_text_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise bad_line(path, lineno, f"{line.strip()!r}", "'<file>.avi <0|1|2>' (0 unused, 1 train, 2 test)")
            if parts[1] != want:
                continue
            vid = parts[0].rsplit(".", 1)[0]
            if vid in seen:
                raise bad_line(path, lineno, f"video {vid!r} listed twice (first in {seen[vid]})", "each video once")
            seen[vid] = f"{path.name} line {lineno}"
            rows.append(ManifestRow(vid, f"{cls}/{parts[0]}", readable_name(cls), vid, split_name, label=cls,
                                    source="hmdb51"))
    if not rows:
        raise ConvertError(f"hmdb51: no {partition} videos (id {want}) in the {len(inputs)} file(s)")
    return Converted(rows)
