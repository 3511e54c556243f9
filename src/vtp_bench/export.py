"""``vtp-bench export``: a checkpoint as a folder to hand to someone else (or ``huggingface_hub.upload_folder``).

- ``model.safetensors``: the model's tensors under vtp_bench's names (``method.*``), no pickle;
- ``config.yaml``: the resolved config the model is built from;
- ``README.md``: a model card (method, data, training steps and cost, the metrics of the given results JSON files
  with their protocol).

``vtp_bench.load(DIR)``, ``vtp-bench eval --ckpt DIR`` and ``embed --ckpt DIR`` read it back
(``read_exported``): the same weights, so the same embeddings and metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

FORMAT = "vtp_bench.model/1"
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.yaml", "README.md"


class ExportError(ValueError):
    """An export that cannot be written or read: names the folder and the fix."""


def is_exported(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / WEIGHTS).is_file() and (p / CONFIG).is_file()


def read_exported(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config dict, state dict) of an exported folder."""
    from omegaconf import OmegaConf
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    with safe_open(str(p / WEIGHTS), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ExportError(f"{p / WEIGHTS}: format {meta.get('format')!r}, expected {FORMAT!r} (a folder written by "
                          "`vtp-bench export`)")
    config = OmegaConf.to_container(OmegaConf.load(p / CONFIG), resolve=True)
    return config, load_file(str(p / WEIGHTS))  # type: ignore[return-value]


def _metrics_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    from vtp_bench.report import format_table
    from vtp_bench.report.significance import Settings

    if not results:
        return ["No results given (`vtp-bench export --results FILE.json` adds the metrics of `vtp-bench eval`)."]
    return [format_table(list(results), settings=Settings(n_boot=2_000, n_perm=2_000)).rstrip()]


def model_card(module: Any, ckpt: str | Path, results: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The README.md of an export: what the model is, how it was trained, what it scores."""
    cfg = module.cfg
    cost = summary.get("cost") or {}
    from vtp_bench.models.params import parameter_counts

    params = parameter_counts(module.method)
    lines = [f"# {cfg.method.name} ({cfg.name})", "",
             f"A vtp_bench model (format `{FORMAT}`): `{WEIGHTS}` (safetensors, no pickle) and `{CONFIG}` "
             "(the resolved "
             "config it is built from).", "", "```python", "import vtp_bench",
             "model = vtp_bench.load(\"<this folder>\")", "v = model.encode_video([\"a.mp4\"])",
             "t = model.encode_text([\"a caption\"])", "print(model.similarity(t, v))", "```", "",
             "## Training", "",
             f"- method: `{cfg.method.name}`; experiment `{cfg.name}`; exported from `{Path(ckpt).name}`",
             f"- data: train {list(cfg.data.train)}, evaluated on {list(cfg.data.eval)}; {cfg.data.num_frames} frames "
             f"at {cfg.data.img_size} px",
             f"- parameters: {params['trainable_params']:,} trainable of {params['total_params']:,}",
             f"- seed {summary.get('seed')}, {cost.get('optimizer_steps', summary.get('global_step', '?'))} optimizer "
             f"steps, {cost.get('samples_seen', '?')} samples seen, {cost.get('world_size', '?')} process(es)", "",
             "## Results", ""]
    return "\n".join(lines + _metrics_lines(results)) + "\n"


def export(ckpt: str | Path, out: str | Path, results: Sequence[str | Path] = (), overwrite: bool = False,
           method: str | None = None, experiment: str | None = None, trust: bool = False) -> Path:
    """Write the folder (see the module doc); refuses a non-empty ``out`` unless ``overwrite``."""
    from omegaconf import OmegaConf
    from safetensors.torch import save

    from vtp_bench.atomic import atomic_write_bytes, atomic_write_text, dir_mode
    from vtp_bench.evaluate import module_from_checkpoint
    from vtp_bench.report import collect_results

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; an export is a folder (model.safetensors, config.yaml, README.md): "
                          "give a folder name")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not an empty folder; choose another --out or pass --overwrite")
    module = module_from_checkpoint(ckpt, trust=trust, method=method, experiment=experiment)
    found = collect_results(results) if results else []
    summary: dict[str, Any] = {}
    run_summary = Path(ckpt).resolve().parent.parent / "summary.json"
    if Path(ckpt).is_file() and run_summary.is_file():
        summary = json.loads(run_summary.read_text())
    tensors = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    # the three files go to a new folder beside `out`, renamed into place once all are written: an export is whole
    # or absent (never new weights beside an old config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        atomic_write_bytes(staging / WEIGHTS, save(tensors, metadata={"format": FORMAT,
                                                                      "method": module.cfg.method.name}))
        atomic_write_text(staging / CONFIG, OmegaConf.to_yaml(module.cfg))
        atomic_write_text(staging / CARD, model_card(module, ckpt, found, summary))
        os.chmod(staging, dir_mode())
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
