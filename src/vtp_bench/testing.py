"""Every registered method at CPU-test size, and a fake training batch for it: shared by the tests
(``tests/conftest.py``) and the benchmarks (``scripts/bench_train.py``), so both run the same sizes.

``tiny_config(method)`` is ``experiments/<method>_synth.yaml`` with ``experiments/tiny/<method>.yaml`` merged over
it and the CPU settings below: the one place a method's test size is written. The sizes ship inside the package
(an installed wheel has them too); a method from a plugin passes its own folder as ``tiny_dir``. ``experiments/tiny``
is a subfolder, so ``vtp-bench list`` (``experiments/*.yaml``) does not take the sizes for experiments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vtp_bench.config import load_config

# every package method's CPU-test size, <method>.yaml (package data, next to the experiments)
TINY_DIR = Path(__file__).resolve().parent / "experiments" / "tiny"
CPU = ["trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
       "trainer.enable_progress_bar=false", "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0"]


def _dotlist(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, DictConfig):
        return [item for k, v in node.items() for item in _dotlist(v, f"{prefix}{k}.")]
    value = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
    return [f"{prefix[:-1]}={json.dumps(value) if not isinstance(value, str) else value}"]


def tiny_overrides(method: str, tiny_dir: Path = TINY_DIR) -> list[str]:
    """CPU settings + ``<tiny_dir>/<method>.yaml`` as ``key=value`` overrides of ``<method>_synth``."""
    path = Path(tiny_dir) / f"{method}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: every registered method needs its CPU-test size there")
    return CPU + _dotlist(OmegaConf.load(path))


def tiny_config(method: str, *overrides: str, tiny_dir: Path = TINY_DIR) -> DictConfig:
    return load_config(f"{method}_synth", tiny_overrides(method, tiny_dir) + list(overrides))


def fake_method_inputs(cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    """Random inputs for a batch of ``n`` that the configured method declares (``Method.data_inputs``), each from
    its provider's ``fake`` (``data/inputs/``): DemoVLP's boxes or detector features, LocVTP's frame times, a
    grounding head's clips of whole videos; the clip and texts are the caller's."""
    from vtp_bench.data.inputs import fake_inputs

    return fake_inputs(cfg, n, generator, dtype)


def fake_grounding_clips(cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype
                         ) -> dict[str, Any]:
    """The ``grounding_clips`` input of ``n`` videos as ``collate`` pads it (``GroundingClips.fake``)."""
    from vtp_bench.registry import INPUTS

    return INPUTS.get("grounding_clips").fake(cfg, n, generator, dtype)


def fake_batch(cfg: DictConfig, n: int, dtype: torch.dtype) -> dict[str, Any]:
    """A training batch of ``n`` random clips and caption-like texts at the config's size (seeded), with the
    other inputs the method declares (``fake_method_inputs``)."""
    g = torch.Generator().manual_seed(1)
    d = cfg.data
    words = ["red", "blue", "green", "circle", "square", "moves", "left", "grows", "while", "a", "small"]
    texts = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (6,), generator=g)) for _ in range(n)]
    return {
        "video": torch.randn(n, d.num_frames, 3, d.img_size, d.img_size, generator=g, dtype=dtype),
        "video_mask": torch.ones(n, d.num_frames, dtype=torch.bool),
        "text": texts,
        "video_id": [f"v{i}" for i in range(n)],
        "size": n,
        **fake_method_inputs(cfg, n, g, dtype),  # region boxes / features, frame times, grounding clips
    }


def seeded_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Reproducible random tensors for a released layout's key names and shapes (checkpoint-layout tests and
    the scripts that run an official model on the same weights): one generator, the names in sorted order, so
    the same names and shapes give the same values in every process. 1-D ``*.weight`` tensors (the norms of these
    models) are 1 + noise, everything else small noise, so activations stay in range through a few layers."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape = tuple(int(s) for s in shapes[name])
        t = torch.randn(shape, generator=g, dtype=torch.float32)
        out[name] = 1 + 0.1 * t if len(shape) == 1 and name.endswith("weight") else 0.05 * t
    return out
