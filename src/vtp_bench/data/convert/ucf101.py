"""UCF101: the official ``ucfTrainTestlist`` files, for zero-shot action recognition.

``testlist0K.txt`` lists ``<Class>/<file>.avi`` (one video per line), ``trainlist0K.txt`` the same plus the
1-based class index, and ``classInd.txt`` is ``<index> <Class>`` for the 101 classes. K = 1, 2, 3 are the three
official splits (split 1: 9,537 train / 3,783 test videos).

One row per video: ``path`` = the list's ``<Class>/<file>.avi`` (the layout of the extracted ``UCF-101/``
folder), ``label`` = the official class name (``ApplyEyeMakeup``), ``text`` = its readable name (``apply eye
makeup``: CamelCase split into lower-case words), which the zero-shot task puts in the prompt template. The
manifest's split is ``test1``..``test3`` / ``train1``..``train3``, from the list's name (``--split`` overrides).
With ``classInd.txt`` every class is checked against it (and a train list's index against the class).
"""

from __future__ import annotations

import re
from pathlib import Path

from vtp_bench.data.convert.base import Converted, ConvertError, bad_line, converter, read_text_lines
from vtp_bench.data.manifest import ManifestRow

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def readable_name(cls: str) -> str:
    """``ApplyEyeMakeup`` -> ``apply eye makeup``; ``YoYo`` -> ``yo yo``; ``PushUps`` -> ``push ups``."""
    return _CAMEL.sub(" ", cls).replace("_", " ").lower()


def split_name(path: Path, given: str | None) -> str:
    """``testlist02.txt`` -> ``test2``, ``trainlist01.txt`` -> ``train1`` (``--split`` wins)."""
    if given:
        return given
    m = re.fullmatch(r"(train|test)list0?(\d+)\.txt", path.name.lower())
    if not m:
        raise ConvertError(f"{path}: cannot tell the split from the name (expected trainlist0K.txt or "
                           f"testlist0K.txt); pass --split, e.g. --split test1")
    return f"{m.group(1)}{int(m.group(2))}"


def read_class_index(path: Path) -> dict[str, int]:
    """``classInd.txt``: ``<1-based index> <Class>`` per line -> {Class: index}."""
    out: dict[str, int] = {}
    for lineno, line in read_text_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise bad_line(path, lineno, f"{line.strip()!r}", "'<index> <ClassName>', e.g. '1 ApplyEyeMakeup'")
        if parts[1] in out:
            raise bad_line(path, lineno, f"class {parts[1]!r} listed twice", "each class once")
        out[parts[1]] = int(parts[0])
    if not out:
        raise ConvertError(f"{path}: no classes")
    return out


@converter("ucf101", inputs=("testlist0K.txt", "classInd.txt"), optional_inputs=1)
def convert(inputs: list[Path], split: str | None) -> Converted:
    """UCF101 (zero-shot action recognition): the videos of one official train/test list, labelled by class."""
    list_path = inputs[0]
    index = read_class_index(inputs[1]) if len(inputs) > 1 else None
    split = split_name(list_path, split)
    expected = "'<Class>/<file>.avi' (testlist) or '<Class>/<file>.avi <class index>' (trainlist)"
    rows, seen = [], {}
    for lineno, line in read_text_lines(list_path):
        parts = line.split()
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise bad_line(list_path, lineno, f"{line.strip()!r}", expected)
        rel = parts[0].strip("/")
        cls, file = rel.split("/", 1)
        if "/" in file or not file:
            raise bad_line(list_path, lineno, f"{rel!r} is not <Class>/<file>", expected)
        if index is not None:
            if cls not in index:
                raise bad_line(list_path, lineno, f"class {cls!r} is not in {inputs[1].name}",
                               "a class of classInd.txt")
            if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) != index[cls]):
                raise bad_line(list_path, lineno, f"class index {parts[1]!r} but {inputs[1].name} gives "
                               f"{cls} index {index[cls]}", "the index of classInd.txt")
        vid = file.rsplit(".", 1)[0]
        if vid in seen:
            raise bad_line(list_path, lineno, f"video {vid!r} listed twice (first on line {seen[vid]})",
                           "each video once")
        seen[vid] = lineno
        rows.append(ManifestRow(vid, rel, readable_name(cls), vid, split, label=cls, source="ucf101"))
    if not rows:
        raise ConvertError(f"{list_path}: the list is empty")
    return Converted(rows)
