"""Converters on the real annotation files of ../shared/data/annotations: exact counts, errors with lines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import annotations_dir, find_annotations
from vtp_bench.cli import main
from vtp_bench.data.convert.base import CONVERTERS, ConvertError, place_videos
from vtp_bench.data.manifest import read_manifest

ANN = find_annotations() or Path("annotations-not-found")


@pytest.fixture(autouse=True)
def _needs_annotations() -> None:
    annotations_dir()  # skipped without the files; a failure under CI


def convert(fmt: str, *files: str | Path, split: str | None = None):
    return CONVERTERS.get(fmt)([ANN / f for f in files], split)


def counts(result) -> tuple[int, int]:
    return len(result.rows), len({r.video_id for r in result.rows})


# (format, files, rows, videos, split): the counts the files hold and, where they agree, the papers report
CASES = [
    ("msrvtt_1ka", ("msrvtt/MSRVTT_JSFUSION_test.csv",), 1000, 1000, "test"),
    ("msvd", ("msvd/captions_msvd.json", "msvd/test_list.txt"), 27763, 670, "test"),
    ("msvd", ("msvd/captions_msvd.json", "msvd/train_list.txt"), 48774, 1200, "train"),
    ("msvd", ("msvd/captions_msvd.json", "msvd/val_list.txt"), 4290, 100, "val"),
    ("lsmdc", ("lsmdc/LSMDC16_challenge_1000_publictect.csv",), 1000, 1000, "test"),
    ("didemo", ("didemo/test_data.json", "didemo/test_list.txt"), 1004, 1004, "test"),
    ("didemo", ("didemo/val_data.json", "didemo/val_list.txt"), 1065, 1065, "val"),
    ("didemo_grounding", ("didemo/test_data.json", "didemo/test_list.txt"), 3932, 1004, "test"),
    ("charades_sta", ("charades_sta/charades_sta_test.txt", "charades_sta/Charades_v1_test.csv"), 3720, 1334, "test"),
    ("charades_sta", ("charades_sta/charades_sta_train.txt",), 12404, 5336, "train"),
    ("activitynet", ("activitynet_captions/val_1.json",), 4917, 4917, "test"),
    ("activitynet", ("activitynet_captions/val_2.json",), 4885, 4885, "val"),
    ("activitynet_grounding", ("activitynet_captions/val_1.json",), 17505, 4917, "val"),  # 2D-TAN's val ...
    ("activitynet_grounding", ("activitynet_captions/val_2.json",), 17031, 4885, "test"),  # ... and test
    ("didemo", ("didemo/test_data.json",), 1037, 1037, "test"),  # without the list: every video of the JSON
    ("didemo_grounding", ("didemo/test_data.json",), 4021, 1037, "test"),
]


@pytest.mark.parametrize("fmt,files,rows,videos,split", CASES, ids=[f"{c[0]}-{Path(c[1][-1]).stem}" for c in CASES])
def test_counts_on_real_files(fmt, files, rows, videos, split):
    result = convert(fmt, *files)
    assert counts(result) == (rows, videos)
    assert {r.split for r in result.rows} == {split}
    assert len({r.text_id for r in result.rows}) == rows
    assert all(r.source and r.text.strip() for r in result.rows)


def test_msrvtt_1ka_matches_jsfusion_list_and_is_disjoint_from_9k():
    test_ids = {r.video_id for r in convert("msrvtt_1ka", "msrvtt/MSRVTT_JSFUSION_test.csv").rows}
    jsfusion_val = set((ANN / "msrvtt/val_list_jsfusion.txt").read_text().split())
    with open(ANN / "msrvtt/MSRVTT_train.9k.csv") as f:
        train = {r["video_id"] for r in csv.DictReader(f)}
    assert test_ids == jsfusion_val and not test_ids & train and len(train) == 9000


def _fake_msrvtt_json(tmp_path: Path) -> Path:
    """MSRVTT_data.json's layout (the file itself is not in the annotations): 20 captions per video, 19 for two."""
    sentences = [{"video_id": f"video{v}", "caption": f"caption {k} of video {v}", "sen_id": v * 20 + k}
                 for v in range(10000) for k in range(19 if v in (3, 7500) else 20)]
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(json.dumps({"videos": [{"video_id": f"video{v}"} for v in range(10000)], "sentences": sentences}))
    return path


def test_msrvtt_all_captions_of_a_split_list(tmp_path):
    data = _fake_msrvtt_json(tmp_path)
    conv = CONVERTERS.get("msrvtt")
    nine_k = conv([data, ANN / "msrvtt/MSRVTT_train.9k.csv"], None)
    assert counts(nine_k) == (9000 * 20 - 1, 9000)  # video3 is in the 9k train set, video7500 is not
    assert {r.split for r in nine_k.rows} == {"train"}
    same = conv([data, ANN / "msrvtt/train_list_jsfusion.txt"], None)
    assert {r.video_id for r in same.rows} == {r.video_id for r in nine_k.rows}
    seven_k = conv([data, ANN / "msrvtt/MSRVTT_train.7k.csv"], None)
    full = conv([data, ANN / "msrvtt/train_list_full.txt"], None)
    val = conv([data, ANN / "msrvtt/val_list_full.txt"], None)
    test = conv([data, ANN / "msrvtt/test_list_full.txt"], None)
    assert counts(full)[1] == 6513 and counts(val)[1] == 497 and counts(test) == (2990 * 20 - 1, 2990)
    assert {r.video_id for r in seven_k.rows} == {r.video_id for r in full.rows + val.rows}
    assert {r.split for r in test.rows} == {"test"} and {r.split for r in val.rows} == {"val"}


def test_msvd_rows_are_every_caption_independently_counted():
    caps = json.loads((ANN / "msvd/captions_msvd.json").read_text())
    ids = (ANN / "msvd/test_list.txt").read_text().split()
    rows = convert("msvd", "msvd/captions_msvd.json", "msvd/test_list.txt").rows
    assert [r.text for r in rows] == [c.strip() for v in ids for c in caps[v]]
    assert rows[0].path == f"{ids[0]}.avi"


def test_lsmdc_paths_and_movies():
    rows = convert("lsmdc", "lsmdc/LSMDC16_challenge_1000_publictect.csv").rows
    assert len({r.path.split("/")[0] for r in rows}) == 17
    r = next(r for r in rows if r.video_id == "1012_Unbreakable_00.05.16.065-00.05.21.941")
    assert r.path == "1012_Unbreakable/1012_Unbreakable_00.05.16.065-00.05.21.941.avi"


def test_didemo_paragraphs_join_descriptions_in_file_order():
    data = json.loads((ANN / "didemo/test_data.json").read_text())
    rows = {r.video_id: r for r in convert("didemo", "didemo/test_data.json", "didemo/test_list.txt").rows}
    video = "10052357@N03_7585070382_5762149bfc."  # a name without extension, matched exactly (as CLIP4Clip)
    assert video in rows and rows[video].path == video
    for v in list(rows)[:50] + [video]:
        assert rows[v].text == " ".join(a["description"].strip() for a in data if a["video"] == v)
        assert (rows[v].start, rows[v].end) == (0.0, 31.0)  # CLIP4Clip: annotation stopped at 30 s


def test_didemo_grounding_moment_is_the_most_frequent_pair():
    data = json.loads((ANN / "didemo/test_data.json").read_text())
    listed = (ANN / "didemo/test_list.txt").read_text().splitlines()
    result = convert("didemo_grounding", "didemo/test_data.json", "didemo/test_list.txt")
    rows = result.rows
    assert len(rows) == sum(a["video"] in set(listed) for a in data)
    assert result.dropped == [f"{ANN / 'didemo/test_data.json'}: 89 annotations of 33 videos not in test_list.txt"]
    first = next(a for a in data if a["video"] == listed[0])
    pair = max(first["times"], key=lambda t: (first["times"].count(t), -first["times"].index(t)))
    assert (rows[0].start, rows[0].end) == (5.0 * pair[0], 5.0 * (pair[1] + 1))


def test_charades_end_clipped_to_length_and_bad_rows_dropped():
    with open(ANN / "charades_sta/Charades_v1_test.csv", newline="") as f:
        length = {r["id"]: float(r["length"]) for r in csv.DictReader(f)}
    clipped = convert("charades_sta", "charades_sta/charades_sta_test.txt", "charades_sta/Charades_v1_test.csv").rows
    raw = convert("charades_sta", "charades_sta/charades_sta_test.txt").rows
    assert sum(a.end != b.end for a, b in zip(raw, clipped)) == 562
    assert all(r.end <= length[r.video_id] == r.duration for r in clipped)
    assert raw[0].video_id == "3MSZA" and (raw[0].start, raw[0].end) == (24.3, 30.4)
    assert raw[0].text == "person turn a light on."
    train = convert("charades_sta", "charades_sta/charades_sta_train.txt")
    assert len(train.dropped) == 4 and "line 8252" in train.dropped[0]


def test_activitynet_grounding_clips_to_duration():
    data = json.loads((ANN / "activitynet_captions/val_1.json").read_text())
    rows = convert("activitynet_grounding", "activitynet_captions/val_1.json").rows
    over = sum(e > v["duration"] for v in data.values() for _, e in v["timestamps"])
    assert over == 134
    assert all(r.end <= r.duration for r in rows)
    para = convert("activitynet", "activitynet_captions/val_1.json").rows[0]
    v = data[para.video_id]
    assert para.text == " ".join(s.strip() for s in v["sentences"]) and para.duration == v["duration"]


WEBVID = """videoid,contentUrl,duration,page_dir,name
31353427,https://ak.picdn.net/shutterstock/videos/31353427/preview/stock-footage-a.mp4,PT00H00M11S,006001_006050,"Merida, mexico - may 23, 2017: tourists walk"
14781349,https://ak.picdn.net/shutterstock/videos/14781349/preview/stock-footage-b.mp4,PT00H00M30S,006051_006100,Aerial shot of a lake
"""


def test_webvid_and_cc3m_in_their_official_layout(tmp_path):
    (tmp_path / "results_2M_train.csv").write_text(WEBVID)
    rows = CONVERTERS.get("webvid")([tmp_path / "results_2M_train.csv"], None).rows
    assert [(r.path, r.duration, r.split) for r in rows] == [
        ("006001_006050/31353427.mp4", 11.0, "train"), ("006051_006100/14781349.mp4", 30.0, "train")]
    assert rows[0].text == "Merida, mexico - may 23, 2017: tourists walk"
    (tmp_path / "cc3m_training_success_full.tsv").write_text("caption\tfilename\na dog on a beach\t0001_1.jpg\n"
                                                             "a red car\t0002_2.jpg\n")
    rows = CONVERTERS.get("cc3m")([tmp_path / "cc3m_training_success_full.tsv"], None).rows
    assert [(r.path, r.text, r.split) for r in rows] == [("training/0001_1.jpg", "a dog on a beach", "train"),
                                                         ("training/0002_2.jpg", "a red car", "train")]


@pytest.mark.parametrize("fmt,name,content,where", [
    ("charades_sta", "charades_sta_test.txt", "3MSZA 24.3 30.4##a.\nAO8RW 0.0 6.9 person sits\n", "line 2"),
    ("lsmdc", "LSMDC16_x.csv", "a_00.00\t1\t2\t3\t4\tSOMEONE runs.\nb_00.00\t1\t2\tSOMEONE\n", "line 2"),
    ("webvid", "results_2M_train.csv", "videoid,duration,name\n1,PT00H00M11S,x\n", "line 1"),
    ("webvid", "results_2M_train.csv", WEBVID + "999,http://x,PT1S\n", "line 4: 3 fields instead of 5"),
    ("webvid", "results_2M_train.csv", WEBVID + '7,http://x,PT1S,p,"a cat\n8,http://y,PT2S,p,a dog"\n',
     "line 4: a quoted field runs over 2 lines"),
    ("webvid", "results_2M_train.csv", WEBVID + '7,http://x,PT1S,p,"a cat\n', "line 4: malformed csv"),
    ("webvid", "results_2M_train.csv", WEBVID + "7,http://x,eleven seconds,p,a cat\n", "line 4: duration"),
    ("msrvtt_1ka", "MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id,sentence\nret0,msr1,video1,\n", "line 2"),
    ("activitynet", "val_1.json", '{"v_a": {"duration": 3.0, "timestamps": [[0, 1]]', "line 1"),
])
def test_unparseable_rows_name_file_and_line(tmp_path, fmt, name, content, where):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConvertError) as e:
        CONVERTERS.get(fmt)([path], None)
    assert str(path) in str(e.value) and where in str(e.value)


def test_wrong_number_of_inputs_and_missing_file(tmp_path):
    with pytest.raises(ConvertError, match="takes captions_msvd.json SPLIT_list.txt"):
        CONVERTERS.get("msvd")([tmp_path / "a.json"], None)
    with pytest.raises(ConvertError, match="does not exist"):
        CONVERTERS.get("lsmdc")([tmp_path / "nope.csv"], None)


def test_place_videos_resolves_extensions_and_reports_missing(tmp_path):
    rows = convert("msrvtt_1ka", "msrvtt/MSRVTT_JSFUSION_test.csv").rows[:3]
    root = tmp_path / "data" / "msrvtt_1ka" / "raw"
    (root / "sub").mkdir(parents=True)
    (root / f"{rows[0].video_id}.mp4").write_bytes(b"x")
    (root / f"{rows[1].video_id}.webm").write_bytes(b"x")  # another extension, same folder
    placed, missing = place_videos(rows, tmp_path / "data" / "msrvtt_1ka" / "test.jsonl", root)
    assert [p.path for p in placed[:2]] == [f"raw/{rows[0].video_id}.mp4", f"raw/{rows[1].video_id}.webm"]
    assert missing == [rows[2].path] and placed[2].path == f"raw/{rows[2].path}"
    elsewhere, _ = place_videos(rows, tmp_path / "manifests" / "test.jsonl", root)
    assert Path(elsewhere[0].path).is_absolute()
    default, none = place_videos(rows, tmp_path / "m.jsonl", None)
    assert default[0].path == f"videos/{rows[0].video_id}.mp4" and none == []


def test_cli_convert_writes_a_readable_manifest(tmp_path, capsys):
    out = tmp_path / "msvd" / "test.jsonl"
    assert main(["data", "convert", "msvd", str(ANN / "msvd/captions_msvd.json"), str(ANN / "msvd/test_list.txt"),
                 "--out", str(out)]) == 0
    assert "27763 rows, 670 videos" in capsys.readouterr().out
    rows = read_manifest(out)
    assert len(rows) == 27763 and rows[0].path.startswith("videos/") and rows[0].source == "msvd"
    assert main(["data", "convert", "charades_sta", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
