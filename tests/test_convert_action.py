"""HMDB51 / UCF101 converters on hand-made files in the official formats, the class list of a classification
manifest, and the catalog entries of the two datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vtp_bench.cli import main
from vtp_bench.data.catalog import DataNotFoundError, locate
from vtp_bench.data.classes import read_classes
from vtp_bench.data.convert.base import CONVERTERS, ConvertError
from vtp_bench.data.convert.ucf101 import readable_name
from vtp_bench.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest

# UCF101's ucfTrainTestlist ships with Windows line ends; the folder "HandstandPushups" holds files spelled
# "v_HandStandPushups_*" (as in the real lists)
CLASS_IND = "1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n"
TESTLIST = ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi\r\n"
            "HandstandPushups/v_HandStandPushups_g01_c01.avi\r\nYoYo/v_YoYo_g01_c01.avi\r\n")
TRAINLIST = ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
             "YoYo/v_YoYo_g08_c01.avi 3\r\n")
# HMDB51's testTrainMulti_7030_splits: "<file> <0|1|2> " per line (note the trailing space)
HMDB = {
    "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 ", "April_09_brush_hair_u_nm_np1_ba_goo_1.avi 2 ",
                   "Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi 0 "],
    "ride_bike": ["Bike_Ride_ride_bike_f_cm_np1_ba_med_0.avi 2 ", "Bike_Ride_ride_bike_f_cm_np1_ba_med_1.avi 2 ",
                  "Ride_ride_bike_f_cm_np1_fr_goo_0.avi 1 "],
}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def ucf(tmp_path) -> Path:
    d = tmp_path / "ucfTrainTestlist"
    _write(d / "classInd.txt", CLASS_IND)
    for k in (1, 2, 3):
        _write(d / f"testlist0{k}.txt", TESTLIST)
        _write(d / f"trainlist0{k}.txt", TRAINLIST)
    return d


@pytest.fixture
def hmdb(tmp_path) -> Path:
    d = tmp_path / "testTrainMulti_7030_splits"
    for k in (1, 2, 3):
        for cls, lines in HMDB.items():
            _write(d / f"{cls}_test_split{k}.txt", "\n".join(lines) + "\n")
    return d


def test_ucf101_test_and_train_lists(ucf):
    conv = CONVERTERS.get("ucf101")
    res = conv([ucf / "testlist02.txt", ucf / "classInd.txt"])
    rows = res.rows
    assert [r.video_id for r in rows] == ["v_ApplyEyeMakeup_g01_c01", "v_ApplyEyeMakeup_g01_c02",
                                         "v_HandStandPushups_g01_c01", "v_YoYo_g01_c01"]
    assert rows[2].path == "HandstandPushups/v_HandStandPushups_g01_c01.avi"
    assert [r.label for r in rows] == ["ApplyEyeMakeup", "ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert [r.text for r in rows] == ["apply eye makeup", "apply eye makeup", "handstand pushups", "yo yo"]
    assert {r.split for r in rows} == {"test2"} and {r.source for r in rows} == {"ucf101"}
    train = conv([ucf / "trainlist01.txt", ucf / "classInd.txt"]).rows
    assert {r.split for r in train} == {"train1"} and len(train) == 3
    assert len(conv([ucf / "testlist01.txt"]).rows) == 4  # classInd.txt is optional
    assert conv([ucf / "testlist01.txt"], "mysplit").rows[0].split == "mysplit"


def test_readable_ucf_names():
    assert readable_name("ApplyEyeMakeup") == "apply eye makeup"
    assert readable_name("YoYo") == "yo yo"
    assert readable_name("PushUps") == "push ups"
    assert readable_name("CleanAndJerk") == "clean and jerk"
    assert readable_name("Skijet") == "skijet"


def test_ucf101_errors_name_the_line(ucf, tmp_path):
    conv = CONVERTERS.get("ucf101")
    bad = _write(tmp_path / "testlist01.txt", "ApplyEyeMakeup/v_a.avi\nBogusClass/v_b.avi\n")
    with pytest.raises(ConvertError, match=r"testlist01.txt line 2: class 'BogusClass' is not in classInd.txt"):
        conv([bad, ucf / "classInd.txt"])
    wrong = _write(tmp_path / "x" / "trainlist01.txt", "YoYo/v_YoYo_g08_c01.avi 1\n")
    with pytest.raises(ConvertError, match="line 1: class index '1' but classInd.txt gives YoYo index 3"):
        conv([wrong, ucf / "classInd.txt"])
    flat = _write(tmp_path / "y" / "testlist01.txt", "v_YoYo_g08_c01.avi\n")
    with pytest.raises(ConvertError, match="line 1"):
        conv([flat])
    with pytest.raises(ConvertError, match="pass --split"):
        conv([_write(tmp_path / "mylist.txt", "YoYo/v.avi\n")])


def test_hmdb51_partitions_and_splits(hmdb):
    conv = CONVERTERS.get("hmdb51")
    files = sorted(hmdb.glob("*_test_split2.txt"))
    test = conv(files).rows  # default: the test partition (id 2)
    assert [r.video_id for r in test] == [
        "April_09_brush_hair_u_nm_np1_ba_goo_1", "Bike_Ride_ride_bike_f_cm_np1_ba_med_0",
        "Bike_Ride_ride_bike_f_cm_np1_ba_med_1"]
    assert test[0].path == "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi"
    assert [r.label for r in test] == ["brush_hair", "ride_bike", "ride_bike"]
    assert [r.text for r in test] == ["brush hair", "ride bike", "ride bike"]
    assert {r.split for r in test} == {"test2"} and {r.source for r in test} == {"hmdb51"}
    train = conv(files, "train").rows  # id 1; the id-0 video is in neither partition
    assert [r.video_id for r in train] == ["April_09_brush_hair_u_nm_np1_ba_goo_0", "Ride_ride_bike_f_cm_np1_fr_goo_0"]
    assert {r.split for r in train} == {"train2"}
    assert {r.split for r in conv(files, "test2").rows} == {"test2"}


def test_hmdb51_errors(hmdb, tmp_path):
    conv = CONVERTERS.get("hmdb51")
    with pytest.raises(ConvertError, match="mix splits"):
        conv([hmdb / "brush_hair_test_split1.txt", hmdb / "ride_bike_test_split2.txt"])
    with pytest.raises(ConvertError, match="names split 3, but the files are"):
        conv([hmdb / "brush_hair_test_split1.txt"], "test3")
    with pytest.raises(ConvertError, match="--split must be train or test"):
        conv([hmdb / "brush_hair_test_split1.txt"], "val")
    with pytest.raises(ConvertError, match="not an HMDB51 split file"):
        conv([_write(tmp_path / "brush_hair.txt", "a.avi 1\n")])
    bad = _write(tmp_path / "b" / "jump_test_split1.txt", "a.avi 1\nb.avi 7\n")
    with pytest.raises(ConvertError, match=r"jump_test_split1.txt line 2: 'b.avi 7'"):
        conv([bad])
    with pytest.raises(ConvertError, match="takes CLASS_test_splitK.txt"):
        conv([])


def test_cli_convert_and_the_class_list(hmdb, ucf, tmp_path, capsys):
    out = tmp_path / "data" / "hmdb51" / "test1.jsonl"
    assert main(["data", "convert", "hmdb51", *map(str, sorted(hmdb.glob("*_split1.txt"))), "--out", str(out)]) == 0
    assert "3 rows, 3 videos, split ['test1']" in capsys.readouterr().out
    rows = read_manifest(out)
    assert rows[0].path == "videos/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi"
    classes = read_classes(out)
    assert classes.labels == ["brush_hair", "ride_bike"] and classes.names == ["brush hair", "ride bike"]
    assert classes.index(rows) == [0, 1, 1]
    uout = tmp_path / "data" / "ucf101" / "test3.jsonl"
    assert main(["data", "convert", "ucf101", str(ucf / "testlist03.txt"), str(ucf / "classInd.txt"),
                 "--out", str(uout)]) == 0
    assert read_classes(uout).names == ["apply eye makeup", "handstand pushups", "yo yo"]


def test_class_list_from_classes_json_and_refusals(tmp_path):
    d = tmp_path / "synth"
    rows = [ManifestRow("a", "videos/a.mp4", "a small red circle moves left", "a_0", "test", label="left"),
            ManifestRow("b", "videos/b.mp4", "a big blue square grows", "b_0", "test", label="grow")]
    write_manifest(d / "test.jsonl", rows)
    (d / "classes.json").write_text(json.dumps({"classes": ["left", "grow", "still"], "template": "an object {}",
                                                "phrases": {"left": "moves left", "grow": "grows",
                                                            "still": "stays still"}}))
    classes = read_classes(d / "test.jsonl")
    assert classes.labels == ["left", "grow", "still"] and classes.names == ["moves left", "grows", "stays still"]
    assert classes.index(rows) == [0, 1]
    (d / "classes.json").unlink()
    with pytest.raises(ManifestError, match="class 'grow' has rows with different texts"):
        rows2 = rows + [ManifestRow("c", "videos/c.mp4", "another caption", "c_0", "test", label="grow")]
        write_manifest(d / "test.jsonl", rows2)
        read_classes(d / "test.jsonl")
    write_manifest(d / "test.jsonl", [ManifestRow("a", "videos/a.mp4", "x", "a_0", "test")])
    with pytest.raises(ManifestError, match="have no 'label'"):
        read_classes(d / "test.jsonl")


def test_catalog_entries(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        locate("hmdb51", tmp_path, "test")
    assert str(tmp_path / "hmdb51" / "test1.jsonl") in str(e.value)
    assert "vtp-bench data convert hmdb51 *_test_split1.txt" in str(e.value)
    with pytest.raises(DataNotFoundError) as e:
        locate("ucf101", tmp_path, "test3")
    assert "vtp-bench data convert ucf101 testlist03.txt classInd.txt" in str(e.value)
    with pytest.raises(DataNotFoundError, match="has no split 'train'"):
        locate("ucf101", tmp_path, "train")
    write_manifest(tmp_path / "ucf101" / "test2.jsonl", [ManifestRow("v", "videos/YoYo/v.avi", "yo yo", "v", "test2",
                                                                     label="YoYo")])
    (tmp_path / "ucf101" / "videos" / "YoYo").mkdir(parents=True)
    assert locate("ucf101", tmp_path, "test2").manifest == tmp_path / "ucf101" / "test2.jsonl"
