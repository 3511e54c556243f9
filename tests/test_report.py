import json

import pytest

from vtp_bench.report import collect_results, format_table, plot_results


def _res(method, r1):
    keys = ["R@1", "R@5", "R@10", "MedR", "MeanR"]
    return {"method": method, "experiment": f"{method}_x", "dataset": "synth", "split": "test",
            "num_queries": 100, "num_videos": 100, "frames": 4,
            "metrics": {f"{d}/{k}": (r1 if k == "R@1" else 1.0) for d in ("t2v", "v2t") for k in keys}}


def test_compare_markdown_and_csv(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_res("frozen", 12.345)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(json.dumps(_res("miles", 20.0)))
    (tmp_path / "sub" / "config.json").write_text(json.dumps({"unrelated": 1}))
    res = collect_results([tmp_path])
    assert [r["method"] for r in res] == ["frozen", "miles"]
    md = format_table(res)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| method") and "t2v/R@1" in lines[0]
    assert "12.3" in lines[2] and "20.0" in lines[3]
    csv_text = format_table(res, "csv")
    assert csv_text.splitlines()[1].startswith("frozen,frozen_x,synth,test,100,100,4,12.3")
    png = plot_results(res, tmp_path / "p.png")
    assert png.stat().st_size > 1000


def test_compare_rejects_non_results(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{}")
    with pytest.raises(ValueError, match="not a vtp_bench results file"):
        collect_results([f])
    with pytest.raises(FileNotFoundError):
        collect_results([tmp_path / "missing"])


def test_compare_one_table_per_task(tmp_path):
    zs = {"method": "miles", "experiment": "miles_x", "dataset": "ucf101", "split": "test1", "task": "zeroshot_cls",
          "num_videos": 30, "num_classes": 101, "frames": 4, "metrics": {"top1": 41.25, "top5": 70.0,
                                                                         "mean_class_acc": 40.0}}
    res = [_res("frozen", 12.0), zs]
    md = format_table(res)
    assert "**retrieval**" in md and "**zeroshot_cls**" in md
    zs_table = md.split("**zeroshot_cls**")[1]
    assert "| top1" in zs_table and "41.2" in zs_table and "t2v/R@1" not in zs_table
    csv_text = format_table(res, "csv")
    assert "method,experiment,dataset,split,num_videos,num_classes,frames,chance_top1,top1,top5,mean_class_acc" in csv_text
    with pytest.raises(ValueError, match="unknown task"):
        format_table([{**zs, "task": "captioning"}])
