"""A plugin adds an input, a method reading it and a task without touching ``src/``
(``tests/plugins/brightness_pairs.py``, loaded with ``VTP_PLUGINS``): listed, trained, evaluated and compared
through the CLI in a fresh process, as a user outside the repository would."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers import oracle
from helpers.runs import run_clean
from vtp_bench.data.manifest import ManifestRow, write_manifest
from vtp_bench.data.synthetic import generate_synthetic
from vtp_bench.testing import tiny_overrides

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "plugins" / "brightness_pairs.py"
ORACLE = HERE / "helpers" / "oracle.py"

SCRIPT = """
import json, sys
from vtp_bench.cli import main
from vtp_bench.report import collect_results, format_table
args = json.loads(sys.argv[1])
for command in args["commands"]:
    code = main(command)
    print("EXIT", code, flush=True)
    if code:
        sys.exit(code)
print(format_table(collect_results(args["results"])))
"""


def test_a_plugin_adds_an_input_a_method_and_a_task_without_touching_src(tmp_path):
    generate_synthetic(tmp_path / "data" / "synth", num_videos=40, seed=4, grounding_videos=1, progress=False)
    # the oracle's known answer: videos of codes 0, 3, 7; their own captions name 0, 3 and 9; each is scored
    # against the next video's caption; the oracle's score falls with (video code - named code) mod 16
    codes, named, dim = [0, 3, 7], [0, 3, 9], 16
    paths = oracle.write_coded_videos(tmp_path / "coded" / "videos", codes)
    write_manifest(tmp_path / "coded" / "test.jsonl", [
        ManifestRow(f"v{i}", f"videos/{p.name}", f"clip {k}", f"v{i}_0", "test") for i, (p, k) in
        enumerate(zip(paths, named))])
    ckpt = oracle.oracle_checkpoint(tmp_path / "oracle.ckpt", dim)
    runs, res = tmp_path / "runs", tmp_path / "results"
    train = ["train", "frozen_synth", *tiny_overrides("frozen"), "method.name=frozen_bright",
             "trainer.max_steps=2", "data.eval_batch_size=2", f"data.root={tmp_path / 'data'}", f"run.dir={runs}",
             "run.version=p"]
    ckpt_bright = runs / "frozen_synth" / "p" / "checkpoints" / "last.ckpt"
    commands = [["list"], train,
                ["eval", "--ckpt", str(ckpt_bright), "--dataset", "synth", "--task", "two_choice",
                 "--data-root", str(tmp_path / "data"), "--out", str(res / "bright.json")],
                ["eval", "--ckpt", str(ckpt), "--dataset", str(tmp_path / "coded"), "--task", "two_choice",
                 "--name", "coded", "--out", str(res / "oracle.json")]]
    env = {"VTP_PLUGINS": os.pathsep.join([str(PLUGIN), str(ORACLE)])}
    r = run_clean([sys.executable, "-c", SCRIPT, json.dumps({"commands": commands, "results": [str(res)]})],
                  cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "brightness" in next(line for line in out.splitlines() if line.startswith("inputs:"))
    assert "two_choice" in next(line for line in out.splitlines() if line.startswith("tasks:"))
    assert "frozen_bright" in next(line for line in out.splitlines() if line.startswith("methods:"))
    metrics = (runs / "frozen_synth" / "p" / "metrics.csv").read_text().splitlines()[0]
    assert "train/bright" in metrics  # the method read the input in training
    bright = json.loads((res / "bright.json").read_text())
    assert bright["task"] == "two_choice" and bright["method"] == "frozen_bright"  # evaluation clips carry it too
    assert 0.0 <= bright["metrics"]["accuracy"] <= 100.0 and len(bright["per_query"]["accuracy"]) == 4
    want = []
    for i, g in enumerate(codes):
        own, other = (g - named[i]) % dim, (g - named[(i + 1) % len(codes)]) % dim
        want.append(100.0 if own < other else 50.0 if own == other else 0.0)
    got = json.loads((res / "oracle.json").read_text())
    assert want == [100.0, 100.0, 0.0] and got["per_query"]["accuracy"] == want
    assert got["metrics"]["accuracy"] == sum(want) / 3
    table = out[out.index("| method"):]
    assert "2-choice acc" in table.splitlines()[0] and "two-choice on coded/test" in table
    assert "two-choice on synth/test" in table and "own caption vs the next video's" in table
