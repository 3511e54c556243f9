"""Optimizer and schedule: learning rates against closed forms at chosen steps (in the optimizer VTPModule builds
and in a real training run's logged learning rates), and the weight-decay split checked by parameter name for
every registered method."""

from __future__ import annotations

import csv
import math
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import PACKAGE_METHODS, tiny_config, tiny_overrides
from vtp_bench.config import to_dict
from vtp_bench.lit import VTPModule, build_method
from vtp_bench.optim import lr_factor

LR = 1e-3


def _lrs_at(module: VTPModule, steps: list[int], total: int) -> dict[int, list[float]]:
    """The learning rate of every parameter group at the given optimizer steps, as the scheduler sets them."""
    module._trainer = SimpleNamespace(estimated_stepping_batches=total)  # what configure_optimizers reads
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    out = {}
    for step in range(max(steps) + 1):
        if step in steps:
            out[step] = [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
    return out


def _module(*overrides: str) -> VTPModule:
    return VTPModule(to_dict(tiny_config("frozen", f"optim.lr={LR}", *overrides)))


def test_warmup_then_cosine_closed_form():
    # 4 warm-up steps, then half a cosine over the remaining 20 of 24 steps
    lrs = _lrs_at(_module("optim.scheduler=cosine", "optim.warmup_steps=4"), [0, 1, 3, 4, 9, 14, 19, 24, 30], total=24)
    expected = {0: LR / 4, 1: LR / 2, 3: LR, 4: LR, 9: LR * (1 + math.sqrt(0.5)) / 2, 14: LR / 2,
                19: LR * (1 - math.sqrt(0.5)) / 2, 24: 0.0, 30: 0.0}
    for step, want in expected.items():
        assert lrs[step] == pytest.approx([want] * len(lrs[step]), abs=1e-12), step


def test_step_schedule_closed_form():
    lrs = _lrs_at(_module("optim.scheduler=step", "optim.milestones=[5,8]", "optim.gamma=0.5", "optim.warmup_steps=2"),
                  [0, 1, 2, 4, 5, 7, 8, 20], total=100)
    expected = {0: LR / 2, 1: LR, 2: LR, 4: LR, 5: LR / 2, 7: LR / 2, 8: LR / 4, 20: LR / 4}
    for step, want in expected.items():
        assert lrs[step] == pytest.approx([want] * len(lrs[step]), abs=1e-12), step


def test_constant_schedule_never_decays():
    lrs = _lrs_at(_module("optim.scheduler=constant", "optim.warmup_steps=0"), [0, 50, 99], total=10)
    assert all(v == pytest.approx(LR) for step in lrs for v in lrs[step])


def test_lr_factor_is_the_closed_form():
    assert lr_factor(0, "cosine", 0, 10) == 1.0
    assert lr_factor(5, "cosine", 0, 10) == pytest.approx(0.5)
    assert lr_factor(10, "cosine", 0, 10) == pytest.approx(0.0)
    assert lr_factor(2, "step", 0, 10, milestones=(2,), gamma=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="optim.scheduler"):
        lr_factor(0, "linear", 0, 10)


def test_training_run_logs_the_scheduled_learning_rate(tmp_path):
    """The learning rate of every step of a real run (LearningRateMonitor's column in metrics.csv) is the closed
    form: warm-up over 3 steps, then cosine to 0 at step 8. A schedule that drops to 0 after warm-up fails."""
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "synth", num_videos=44, seed=2, grounding_videos=0, progress=False)
    args = ["train", "frozen_synth", *tiny_overrides("frozen"), f"data.root={tmp_path}", f"run.dir={tmp_path / 'runs'}",
            "run.version=lr", "trainer.max_steps=8", "optim.scheduler=cosine", "optim.warmup_steps=3",
            f"optim.lr={LR}", "trainer.check_val_every_n_epoch=100"]
    assert main(args) == 0
    with open(tmp_path / "runs" / "frozen_synth" / "lr" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr/pg1")]
    logged = {int(r["step"]): float(r["lr/pg1"]) for r in rows}
    assert sorted(logged) == list(range(8))
    for step, lr in logged.items():
        want = LR * (step + 1) / 3 if step < 3 else LR * 0.5 * (1 + math.cos(math.pi * (step - 3) / 5))
        assert lr == pytest.approx(want, rel=1e-6), (step, lr, want)


# --- weight decay: no decay on biases, norms, embeddings; by parameter name, independent of optim.py ---------------
def _expect_no_decay(name: str) -> bool:
    parent, _, leaf = name.rpartition(".")
    owner = parent.rpartition(".")[2]
    if owner in ("object_embedding", "pos_embedding") and leaf == "weight":
        return False  # DemoVLP's Linear projections of region features / boxes (official names), like a patch proj
    return (leaf.endswith("bias") or leaf == "logit_scale" or bool(re.search(r"embed|token", leaf))
            or bool(re.search(r"embedding", owner)) or bool(re.search(r"norm|^ln_|^ln\d*$", owner, re.I)))


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_weight_decay_split_by_parameter_name(name):
    method = build_method(tiny_config(name))
    groups = method.param_groups(LR, 0.05)
    names = {id(p): n for n, p in method.named_parameters()}
    seen: dict[str, float] = {}
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            assert n not in seen, f"{n} is in two parameter groups"
            seen[n] = g["weight_decay"]
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert set(seen) == trainable, f"not in any group: {sorted(trainable - set(seen))[:5]}; frozen but in a group: " \
                                   f"{sorted(set(seen) - trainable)[:5]}"
    wrong = [(n, wd) for n, wd in seen.items() if (wd == 0.0) != _expect_no_decay(n)]
    assert not wrong, f"weight decay on the wrong parameters (name, decay): {wrong[:8]}"
    assert any(wd == 0.05 for wd in seen.values()) and any(wd == 0.0 for wd in seen.values())


def test_frozen_tower_is_in_no_group():
    method = build_method(tiny_config("frozen", "method.text.freeze=true"))
    grouped = {id(p) for g in method.param_groups(LR, 0.01) for p in g["params"]}
    text = [p for p in method.text_model.parameters()]
    assert text and not any(id(p) in grouped for p in text)
    assert all(id(p) in grouped for p in method.video_model.parameters())


def test_optimizer_gets_betas_eps_and_groups():
    module = _module("optim.name=adam", "optim.betas=[0.8,0.9]", "optim.eps=1e-6", "optim.weight_decay=0.1")
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    opt = module.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    assert all(g["betas"] == (0.8, 0.9) and g["eps"] == 1e-6 for g in opt.param_groups)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.1]
