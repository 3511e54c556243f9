"""Comparison tables (markdown / CSV / LaTeX parse back, best marked), protocol footer and merge check, plots."""

import csv
import io
import json
import re

import pytest

from vtp_bench.cli import main
from vtp_bench.report import (
    ProtocolMismatchError,
    ReportError,
    collect_results,
    format_table,
    plot_curves,
    plot_results,
)

RET_KEYS = ["R@1", "R@5", "R@10", "MedR", "MeanR"]


def _ret(method, r1, medr=2.0, frames=4, **kw):
    m = {f"{d}/{k}": (r1 if k == "R@1" else medr if k == "MedR" else 50.0) for d in ("t2v", "v2t") for k in RET_KEYS}
    return {"method": method, "experiment": f"{method}_x", "checkpoint": f"runs/{method}_x/v0/checkpoints/last.ckpt",
            "dataset": "synth", "split": "test", "task": "retrieval", "num_queries": 100, "num_videos": 50,
            "frames": frames, "sampler": "uniform", "decoder": "pyav", "img_size": 64, "decode_size": None,
            "manifest_sha256": "ab" * 32, "checkpoint_load": {},
            "protocol": {"name": "vtp_bench", "v2t": "caption", "exclude": [], "excluded": [],
                         "rerank": {"name": "none"}},
            "metrics": m, **kw}


def _zs(method, top1):
    return {"method": method, "experiment": f"{method}_x", "checkpoint": f"runs/{method}_x/v0/checkpoints/last.ckpt",
            "dataset": "ucf", "split": "test1", "task": "zeroshot_cls", "num_videos": 30, "num_classes": 101,
            "frames": 4, "sampler": "uniform", "decoder": "pyav", "img_size": 64, "prompt_template": "a video of {}",
            "chance_top1": 100 / 101, "metrics": {"top1": top1, "top5": 70.0, "mean_class_acc": 40.0}}


def _write(tmp_path, name, result):
    p = tmp_path / name
    p.write_text(json.dumps(result))
    return p


def _md_rows(text):
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_markdown_columns_best_and_footer(tmp_path):
    res = [_ret("frozen", 12.345, medr=3.0), _ret("miles", 20.0, medr=2.0), _ret("clip", 20.0, medr=2.5),
           _zs("frozen", 41.25), _zs("miles", 10.0)]
    md = format_table(res)
    rows = _md_rows(md)
    head, sep, body = rows[0], rows[1], rows[2:]
    assert head == ["method", "checkpoint", "t2v R@1", "t2v R@5", "t2v R@10", "t2v MedR", "v2t R@1", "v2t R@5",
                    "v2t R@10", "v2t MedR", "top-1"]
    assert len(sep) == len(head) and all(len(r) == len(head) for r in body)
    by = {r[0]: dict(zip(head, r)) for r in body}
    assert by["frozen"]["checkpoint"] == "frozen_x/v0/last"
    # ties are all marked; MedR: lower is better
    assert by["miles"]["t2v R@1"] == "**20.0**" and by["clip"]["t2v R@1"] == "**20.0**"
    assert by["frozen"]["t2v R@1"] == "12.3"
    assert by["miles"]["t2v MedR"] == "**2.0**" and by["clip"]["t2v MedR"] == "2.5"
    assert by["frozen"]["t2v MedR"] == "3.0"
    assert by["frozen"]["top-1"] == "**41.2**" and by["clip"]["top-1"] == ""
    # every row has equal R@5: all marked
    assert all(by[m]["t2v R@5"] == "**50.0**" for m in by)
    foot = md.split("Protocol, synth:")[1].split("Protocol, ucf:")[0]
    for needle in ("100 queries x 50 videos", "2 caption(s) per video", "v2t caption-wise", "4 frames",
                   "uniform sampler", "pyav decoder", "64 px input", "re-ranking: none", "test file sha256 abababab",
                   "3 vtp_bench checkpoint(s), every tensor loaded"):
        assert needle in foot, needle
    assert "101 classes" in md.split("Protocol, ucf:")[1]


def test_csv_and_latex_parse_back():
    res = [_ret("frozen", 12.0, medr=3.0), _ret("my_method", 20.0, medr=2.0)]
    text = format_table(res, "csv")
    rows = list(csv.reader(io.StringIO("".join(line + "\n" for line in text.splitlines()
                                               if not line.startswith("#")))))
    assert rows[0][:5] == ["method", "checkpoint", "rerank", "seeds", "synth/test/retrieval/t2v/R@1"]
    assert rows[0][5:7] == ["synth/test/retrieval/t2v/R@1_lo", "synth/test/retrieval/t2v/R@1_hi"]
    assert rows[0][-5:] == ["trainable_params", "total_params", "samples_seen", "optimizer_steps", "train_wall_s"]
    assert len(rows) == 3 and all(len(r) == 4 + 8 * 3 + 5 for r in rows)
    col = {h: i for i, h in enumerate(rows[0])}
    r1, medr = col["synth/test/retrieval/t2v/R@1"], col["synth/test/retrieval/t2v/MedR"]
    assert rows[2][r1] == "20.0*" and rows[1][r1] == "12.0" and rows[2][medr] == "2.0*" and rows[1][medr] == "3.0"
    assert rows[1][r1 + 1] == rows[1][r1 + 2] == ""  # no per-item outcomes: no interval
    assert any(line.startswith("# - synth/test retrieval") for line in text.splitlines())

    tex = format_table(res, "latex")
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{llrrrrrrrr}"
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"):
        assert cmd in lines
    assert r"\multicolumn{8}{c}{synth/test retrieval}" in tex and r"\cmidrule(lr){3-10}" in tex
    data = lines[lines.index(r"\midrule") + 1: lines.index(r"\bottomrule")]
    assert len(data) == 2 and all(len(re.split(r"(?<!\\)&", d)) == 10 for d in data)
    assert data[1].startswith(r"my\_method & my\_method\_x/v0/last & \textbf{20.0}")
    assert r"\textbf{2.0}" in data[1] and r"\textbf{12.0}" not in data[0] and r"\textbf{3.0}" not in data[0]
    assert "my_method" not in tex.replace(r"my\_method", "")  # every underscore escaped
    with pytest.raises(ReportError, match="format"):
        format_table(res, "html")


def test_reranked_rows_are_labelled_and_not_marked():
    rr = _ret("frozen", 30.0)
    rr["metrics_reranked"] = {"t2v/R@1": 60.0, "t2v/R@5": 90.0, "t2v/R@10": 95.0, "t2v/MedR": 1.0}
    rr["protocol"]["rerank"] = {"name": "qbnorm", "beta": 20.0, "k": 1, "bank_size": 500, "applies_to": "t2v"}
    md = format_table([rr, _ret("miles", 35.0)])
    rows = _md_rows(md)
    assert rows[0][:3] == ["method", "checkpoint", "rerank"]
    q = next(r for r in rows if r[2] == "qbnorm")
    assert q[3] == "60.0" and q[7] == ""  # re-ranked: not marked, and no v2t under QB-Norm
    assert next(r for r in rows if r[0] == "miles")[3] == "**35.0**"
    assert "qbnorm (dynamic inverted softmax, beta=20.0, k=1, bank of 500 training captions" in md
    # the same checkpoint evaluated with two re-rankings: one raw row, two labelled rows
    ds = _ret("frozen", 30.0)
    ds["metrics_reranked"] = {"t2v/R@1": 40.0, "v2t/R@1": 41.0}
    ds["protocol"]["rerank"] = {"name": "dual_softmax", "temperature": 0.01}
    rows = _md_rows(format_table([rr, ds]))
    assert [r[2] for r in rows[2:]] == ["none", "qbnorm", "dual_softmax"]


def test_different_protocols_refused_split_or_per_row(tmp_path, capsys):
    a = _write(tmp_path, "frozen_a.json", _ret("frozen", 10.0, frames=4))
    b = _write(tmp_path, "frozen_b.json", _ret("miles", 12.0, frames=8, sampler="rand"))
    res = collect_results([a, b])
    with pytest.raises(ProtocolMismatchError) as e:
        format_table(res)
    msg = str(e.value)
    assert "frames: 4 (frozen_a.json) vs 8 (frozen_b.json)" in msg
    assert "sampler: uniform (frozen_a.json) vs rand (frozen_b.json)" in msg and "synth/test retrieval" in msg
    assert "img_size" not in msg
    split = format_table(res, split_protocols=True)
    assert split.count("| method") == 2 and "Table 1 of 2" in split and "frames=8, sampler=rand" in split
    one = format_table(res, per_row=["frames", "sampler"])
    rows = _md_rows(one)
    assert rows[0][2:4] == ["frames", "sampler"] and {r[2] for r in rows[2:]} == {"4", "8"}
    with pytest.raises(ReportError, match="unknown protocol field"):
        format_table(res, per_row=["colour"])
    # acceptance: through the CLI, a one-line refusal that names the field (exit status 2)
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "frames: 4 (frozen_a.json) vs 8 (frozen_b.json)" in err and "--split-protocols" in err
    assert main(["compare", str(a), str(b), "--split-protocols", "--format", "latex"]) == 0
    assert capsys.readouterr().out.count(r"\begin{tabular}") == 2


def test_duplicates_and_bad_inputs(tmp_path):
    with pytest.raises(ReportError, match="two results for frozen"):
        format_table([_ret("frozen", 1.0), _ret("frozen", 2.0)])
    with pytest.raises(ReportError, match="unknown task"):
        format_table([{**_zs("miles", 1.0), "task": "captioning"}])
    f = tmp_path / "x.json"
    f.write_text("{}")
    with pytest.raises(ValueError, match="not a vtp_bench results file"):
        collect_results([f])
    with pytest.raises(ReportError, match="does not exist"):
        collect_results([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match="no results JSON found"):
        collect_results([empty])
    nosplit = tmp_path / "nosplit.json"
    nosplit.write_text(json.dumps({k: v for k, v in _ret("frozen", 1.0).items() if k != "split"}))
    with pytest.raises(ReportError, match="without 'split'"):
        collect_results([nosplit])
    # through the CLI: one sentence, exit 2, no traceback
    assert main(["compare", str(empty)]) == 2


def test_released_checkpoint_load_in_footer():
    r = _ret("frozen", 10.0, checkpoint="/w/cc-webvid2m-4f.pth",
             checkpoint_load={"source": "frozen", "loaded": 150, "ignored": ["a", "b"], "untouched": ["c"],
                              "notes": []})
    md = format_table([r, _ret("miles", 5.0)])
    assert "cc-webvid2m-4f.pth (frozen): 150 tensors loaded, 1 model tensors not in the file, 2 file tensors " in md


def test_plots_written(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "frozen_x" / "v0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,train/loss,train/nce_t2v,train/logit_scale,val/t2v/R@1\n"
                                     "0,4,3.0,1.5,30,\n0,9,2.0,1.0,30,\n0,9,,,,20.0\n0,14,1.5,0.7,30,35.0\n")
    monkeypatch.chdir(tmp_path)
    res = [_ret(m, 10.0 + i) for i, m in enumerate(["frozen", "miles", "clip4clip", "demovlp", "locvtp",
                                                     "regionlearner", "promptswitch"])] + [_zs("frozen", 20.0)]
    png = plot_results(res, tmp_path / "out" / "cmp.png")
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    curves = plot_curves(res, tmp_path / "out" / "cmp.png")
    assert curves == tmp_path / "out" / "cmp_curves.png" and curves.stat().st_size > 5000
    from vtp_bench.report.plots import read_metrics_csv

    s = read_metrics_csv(run / "metrics.csv")
    assert s["train/loss"] == {4: 3.0, 9: 2.0, 14: 1.5} and s["val/t2v/R@1"] == {9: 20.0, 14: 35.0}
    assert plot_curves([_ret("x", 1.0, checkpoint="/nowhere/x.pth")], tmp_path / "n.png") is None


def test_plots_of_one_method_are_not_flat_and_their_titles_fit(tmp_path, monkeypatch):
    """One method's bar PNG is at least 400 px tall (it was a 236 px strip), and each figure's two-line title lies
    inside the figure (the curves' subtitle ran past a one-panel figure's edges), for one run and for five."""
    from PIL import Image

    import vtp_bench.report.plots as plots

    methods = ["frozen", "miles", "clip4clip", "demovlp", "locvtp"]
    for m in methods:
        run = tmp_path / "runs" / f"{m}_x" / "v0"
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text("epoch,step,train/loss,val/t2v/R@1\n0,4,3.0,\n0,9,2.0,20.0\n")
    monkeypatch.chdir(tmp_path)
    save, checked = plots._save, []

    def save_checked(fig, out):
        fig.canvas.draw()
        box, title = fig.bbox, fig._suptitle.get_window_extent()
        assert box.x0 <= title.x0 and title.x1 <= box.x1 and box.y0 <= title.y0 and title.y1 <= box.y1, out.name
        checked.append(out.name)
        return save(fig, out)

    monkeypatch.setattr(plots, "_save", save_checked)
    for n in (1, 5):
        res = [_ret(m, 10.0 + i) for i, m in enumerate(methods[:n])]
        plot_results(res, tmp_path / f"n{n}.png")
        plot_curves(res, tmp_path / f"n{n}.png")
    assert checked == ["n1.png", "n1_curves.png", "n5.png", "n5_curves.png"]
    assert Image.open(tmp_path / "n1.png").size[1] >= 400
