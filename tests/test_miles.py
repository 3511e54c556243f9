"""MILES: masks, the mask token, the snapshot encoder (EMA / copy rules, no gradient, identical on two DDP ranks
and after a save/restore), the MVM loss on masked positions only, released checkpoints, paper-size counts."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import tiny_config
from helpers.official import TEXT_CFG, VIDEO, official_embeddings, official_frozen_state
from vtp_bench.config import ConfigError, load_config
from vtp_bench.lit import build_method
from vtp_bench.methods.miles import Miles, MilesConfig
from vtp_bench.models.checkpoints import load_official
from vtp_bench.models.masking import make_masks, num_masked


def _method(*overrides: str, seed: int = 0) -> Miles:
    torch.manual_seed(seed)
    return build_method(tiny_config("miles", *overrides))


def _batch(n: int, size: int = 32, frames: int = 4, seed: int = 1, offset: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randn(n, frames, 3, size, size, generator=g),
        "video_mask": torch.ones(n, frames, dtype=torch.bool),
        "text": [f"a red circle moves {w}" for w in ("left", "right", "up", "down", "away", "in")[:n]],
        "video_id": [f"v{offset + i}" for i in range(n)],
        "size": n,
    }


# ----------------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("kind", ["block", "random"])
@pytest.mark.parametrize("grid,ratio", [((4, 14, 14), 0.4), ((4, 4, 4), 0.5), ((2, 7, 5), 0.75), ((1, 2, 2), 0.5)])
def test_masks_have_the_exact_ratio_shape_and_the_same_block_in_every_frame(kind, grid, ratio):
    t, h, w = grid
    ids = [f"video{i}" for i in range(16)]
    m = make_masks(ids, grid, ratio, kind, same_across_frames=True, min_block=4)
    assert m.shape == (16, t * h * w) and m.dtype == torch.bool
    per_frame = m.view(16, t, h * w)
    assert (per_frame.sum(-1) == round(ratio * h * w)).all()
    assert (per_frame == per_frame[:, :1]).all()  # a tube: frame 0's mask in every frame
    assert len({tuple(x.tolist()) for x in per_frame[:, 0]}) > 1  # videos get different masks
    indep = make_masks(ids, grid, ratio, kind, same_across_frames=False, min_block=4).view(16, t, h * w)
    assert (indep.sum(-1) == round(ratio * h * w)).all()
    if t > 1 and h * w > 4:
        assert (indep != indep[:, :1]).any()


def test_block_masks_are_blocks():
    """Blockwise masks are spatially clustered: many more masked 4-neighbour pairs than uniform random masks."""
    ids = [f"v{i}" for i in range(64)]

    def adjacent_pairs(kind):
        m = make_masks(ids, (1, 14, 14), 0.4, kind, min_block=16).view(-1, 14, 14)
        return ((m[:, 1:] & m[:, :-1]).sum() + (m[:, :, 1:] & m[:, :, :-1]).sum()).item() / len(ids)

    block, random = adjacent_pairs("block"), adjacent_pairs("random")
    assert block > 1.5 * random, (block, random)


def test_masks_depend_only_on_seed_step_and_video():
    a = make_masks(["x", "y", "z"], (4, 4, 4), 0.5, seed=3, step=7)
    b = make_masks(["z", "x"], (4, 4, 4), 0.5, seed=3, step=7)  # another batch position, another batch
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], make_masks(["x"], (4, 4, 4), 0.5, seed=3, step=8)[0])
    assert num_masked(0.4, 196) == 78
    with pytest.raises(ValueError, match="mask_ratio"):
        num_masked(1.0, 16)


def test_mask_token_replaces_exactly_the_masked_patches():
    m = _method().eval()
    batch = _batch(3)
    mask = m.masks(batch)
    seen = {}

    def spy(x):
        seen["in"] = x.clone()
        seen["out"] = m.mask_hook(mask)(x)
        return seen["out"]

    with torch.no_grad():
        plain = m.video_model.embed(batch["video"])
        hooked = m.video_model.embed(batch["video"], patch_hook=spy)
    x_in, x_out = seen["in"], seen["out"]
    token = m.mask_token.reshape(-1)
    assert mask.any() and (~mask).any()
    assert torch.equal(x_out[mask], token.expand(int(mask.sum()), -1))  # masked: the token itself
    assert torch.equal(x_out[~mask], x_in[~mask])  # visible: untouched
    pos = (hooked - plain)[:, 1:]  # positional embeddings cancel: the difference is token - patch embedding
    assert torch.allclose(pos[mask], (token - x_in[mask]), atol=1e-6)
    assert torch.equal(hooked[:, 0], plain[:, 0]) and torch.equal(hooked[:, 1:][~mask], plain[:, 1:][~mask])


# -------------------------------------------------------------------------------------------------- snapshot
def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_snapshot_starts_as_a_copy_and_follows_the_ema_rule():
    m = _method("method.snapshot_update=ema", "method.snapshot_momentum=0.9").double()
    assert torch.equal(_flat(m.snapshot), _flat(m.video_model))
    s0 = _flat(m.snapshot).clone()
    _perturb(m.video_model, 0)
    o1 = _flat(m.video_model).clone()
    assert m.update_snapshot(1)
    torch.testing.assert_close(_flat(m.snapshot), 0.9 * s0 + 0.1 * o1, rtol=0, atol=1e-12)
    assert not m.update_snapshot(1)  # the same optimizer step again (gradient accumulation): no second update
    torch.testing.assert_close(_flat(m.snapshot), 0.9 * s0 + 0.1 * o1, rtol=0, atol=1e-12)
    _perturb(m.video_model, 1)
    o2 = _flat(m.video_model).clone()
    assert m.update_snapshot(2)
    expected = 0.9 * (0.9 * s0 + 0.1 * o1) + 0.1 * o2
    torch.testing.assert_close(_flat(m.snapshot), expected, rtol=0, atol=1e-12)
    assert int(m.snapshot_step) == 2


def test_snapshot_hard_copy_every_n_steps():
    m = _method("method.snapshot_update=copy", "method.snapshot_every=3")
    s0 = _flat(m.snapshot).clone()
    history = []
    for step in range(1, 8):
        _perturb(m.video_model, step)
        online = _flat(m.video_model).clone()
        changed = m.update_snapshot(step)
        history.append(changed)
        if step % 3 == 0:
            assert torch.equal(_flat(m.snapshot), online), step
            s0 = online
        else:
            assert torch.equal(_flat(m.snapshot), s0), step
    assert history == [False, False, True, False, False, True, False]


def test_no_gradient_reaches_the_snapshot_and_it_stays_in_eval_mode():
    m = _method().train()
    assert not m.snapshot.training and m.video_model.training
    assert all(not p.requires_grad for p in m.snapshot.parameters())
    m.snapshot.requires_grad_(True)  # even when asked to, the targets are computed without a graph
    sum(m.losses(_batch(4)).values()).backward()
    assert all(p.grad is None for p in m.snapshot.parameters())
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0
    m.snapshot.requires_grad_(False)
    trained = {id(p) for g in m.param_groups(1e-3, 0.01) for p in g["params"]}
    assert not trained & {id(p) for p in m.snapshot.parameters()}
    assert id(m.mask_token) in trained


def test_on_train_batch_end_updates_once_per_optimizer_step():
    m = _method("method.snapshot_momentum=0.5")
    _perturb(m.video_model, 0)
    before = _flat(m.snapshot).clone()
    m.on_train_batch_end(0)  # no optimizer step happened yet (skipped batch)
    assert torch.equal(_flat(m.snapshot), before)
    m.on_train_batch_end(1)
    assert not torch.equal(_flat(m.snapshot), before)


# --------------------------------------------------------------------------------------------------- MVM loss
def _direct_mvm(pred, target, where, kind):
    """Per masked position, by a loop: the mean over them of the per-token loss."""
    vals = []
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            if where[b, n]:
                p, t = pred[b, n].double(), target[b, n].double()
                if kind == "l2":
                    vals.append(((p - t) ** 2).mean())
                elif kind == "l1":
                    vals.append((p - t).abs().mean())
                elif kind == "smooth_l1":
                    d = (p - t).abs()
                    vals.append(torch.where(d < 1, 0.5 * d**2, d - 0.5).mean())
                else:
                    vals.append(1 - (p @ t) / (p.norm() * t.norm()))
    return torch.stack(vals).mean()


@pytest.mark.parametrize("kind", ["l2", "l1", "smooth_l1", "cos"])
def test_mvm_loss_equals_a_direct_loop_and_ignores_unmasked_positions(kind):
    m = _method(f"method.mvm_loss={kind}")
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 8, 16, generator=g), torch.randn(3, 8, 16, generator=g)
    where = torch.rand(3, 8, generator=g) < 0.4
    loss = m.mvm_loss(pred, target, where)
    torch.testing.assert_close(loss.double(), _direct_mvm(pred, target, where, kind), rtol=1e-5, atol=1e-6)
    changed = target.clone()
    changed[~where] = 100.0  # every unmasked target changes
    assert m.mvm_loss(pred, changed, where) == loss
    changed[where.nonzero()[0].tolist()[0], where.nonzero()[0].tolist()[1]] += 1.0  # one masked target
    assert m.mvm_loss(pred, changed, where) != loss


def test_losses_use_the_snapshot_targets_at_masked_positions_only(monkeypatch):
    m = _method().eval()
    batch = _batch(4)
    mask = m.masks(batch)
    real = m.targets(batch["video"], batch["video_mask"])
    ref = m.losses(batch)
    assert set(ref) == {"nce_t2v", "nce_v2t", "mvm"} and ref["mvm"] > 0
    altered = real.clone()
    altered[~mask] = torch.randn_like(altered[~mask]) * 10
    monkeypatch.setattr(m, "targets", lambda v, vm: altered)
    assert torch.equal(m.losses(batch)["mvm"], ref["mvm"])
    altered[mask] += 1.0
    assert not torch.equal(m.losses(batch)["mvm"], ref["mvm"])
    # the real targets: the snapshot's final tokens, layer-normalised (miles_synth's target_norm=layernorm)
    with torch.no_grad():
        tokens = m.snapshot(batch["video"]).tokens[:, 1:]
    torch.testing.assert_close(real, F.layer_norm(tokens, tokens.shape[-1:]))


def test_padded_frames_take_no_part_in_mvm(monkeypatch):
    m = _method().eval()
    batch = _batch(2)
    batch["video_mask"][1, 2:] = False
    ref = m.losses(batch)["mvm"]
    real = m.targets(batch["video"], batch["video_mask"])
    p = m.video_model.patches_per_frame
    altered = real.clone()
    altered[1, 2 * p:] += 5.0  # targets of the padded frames
    monkeypatch.setattr(m, "targets", lambda v, vm: altered)
    assert torch.equal(m.losses(batch)["mvm"], ref)


def test_loss_weight_and_fine_tuning_mode():
    a = _method("method.mvm_weight=1.0").eval()
    b = _method("method.mvm_weight=0.25").eval()
    batch = _batch(4)
    la, lb = a.losses(batch), b.losses(batch)
    torch.testing.assert_close(lb["mvm"], 0.25 * la["mvm"])
    torch.testing.assert_close(lb["nce_t2v"], la["nce_t2v"])
    ft = _method("method.mvm_weight=0").eval()
    assert set(ft.losses(batch)) == {"nce_t2v", "nce_v2t"}
    assert not ft.mask_token.requires_grad


@pytest.mark.parametrize("contrast", ["masked", "full"])
def test_contrastive_term_sees_the_chosen_video(contrast):
    from vtp_bench.losses import norm_softmax_loss

    m = _method(f"method.contrast_input={contrast}").eval()
    batch = _batch(4)
    with torch.no_grad():
        got = m.losses(batch)
        hook = m.mask_hook(m.masks(batch)) if contrast == "masked" else None
        v = m.vid_proj(m.video_model(batch["video"], batch["video_mask"], patch_hook=hook).pooled)
        ref = norm_softmax_loss(m.encode_text(batch).pooled, v, 0.05)
    torch.testing.assert_close(got["nce_t2v"], ref["t2v"])
    torch.testing.assert_close(got["nce_v2t"], ref["v2t"])


def test_bad_choices_are_refused_at_load():
    with pytest.raises(ConfigError, match="method.mvm_loss"):
        load_config("miles_synth", ["method.mvm_loss=l3"])
    with pytest.raises(ConfigError, match="method.snapshot_update"):
        load_config("miles_synth", ["method.snapshot_update=sometimes"])


@pytest.mark.parametrize("name", ["miles_synth", "miles_webvid", "miles_cc3m_webvid_1f", "miles_msrvtt",
                                  "miles_zeroshot"])
def test_experiments_load(name):
    cfg = load_config(name)
    assert cfg.method.name == "miles"


# ------------------------------------------------------------------------------- two ranks, DDP, save/restore
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Wrap(torch.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return sum(self.method.losses(batch).values())


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    m = _method("method.snapshot_momentum=0.9", seed=rank)  # each rank builds different weights ...
    ddp = torch.nn.parallel.DistributedDataParallel(_Wrap(m))  # ... DDP broadcasts rank 0's, snapshot included
    opt = torch.optim.AdamW([p for g in m.param_groups(1e-2, 0.0) for p in g["params"]], lr=1e-2)
    res = {"init_snapshot": _flat(m.snapshot).clone(), "init_online": _flat(m.video_model).clone()}
    s0 = _flat(m.snapshot).clone()
    ddp(_batch(3, seed=10 + rank, offset=3 * rank)).backward()  # each rank its own videos
    opt.step()
    m.on_train_batch_end(1)
    res["online1"] = _flat(m.video_model).clone()
    res["snapshot1"] = _flat(m.snapshot).clone()
    res["ema_by_hand"] = 0.9 * s0 + 0.1 * res["online1"]
    # save / restore the module state (what a checkpoint holds) into a model built from another seed
    state = {k: v.clone() for k, v in m.state_dict().items()}
    restored = _method("method.snapshot_momentum=0.9", seed=100 + rank)
    restored.load_state_dict(state)
    res["restored_snapshot"] = _flat(restored.snapshot).clone()
    res["restored_step"] = int(restored.snapshot_step)
    restored.on_train_batch_end(1)  # the step is already folded in: no change
    res["restored_again"] = _flat(restored.snapshot).clone()
    for model in (m, restored):  # the same next online weights on both: the same next snapshot
        with torch.no_grad():
            for p in model.video_model.parameters():
                p.mul_(0.5)
        model.on_train_batch_end(2)
    res["continued2"], res["restored2"] = _flat(m.snapshot).clone(), _flat(restored.snapshot).clone()
    gathered = [None] * world
    dist.all_gather_object(gathered, res)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


def test_snapshot_identical_on_two_ranks_after_a_ddp_step_and_a_restore(tmp_path):
    out = tmp_path / "ranks.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    r0, r1 = torch.load(out)
    assert torch.equal(r0["init_snapshot"], r1["init_snapshot"])
    assert torch.equal(r0["online1"], r1["online1"]) and not torch.equal(r0["online1"], r0["init_online"])
    assert torch.equal(r0["snapshot1"], r1["snapshot1"])
    assert not torch.equal(r0["snapshot1"], r0["init_snapshot"])  # the step moved it
    torch.testing.assert_close(r0["snapshot1"], r0["ema_by_hand"], rtol=0, atol=1e-6)
    for r in (r0, r1):
        assert torch.equal(r["restored_snapshot"], r["snapshot1"]) and r["restored_step"] == 1
        assert torch.equal(r["restored_again"], r["snapshot1"])
        assert torch.equal(r["restored2"], r["continued2"])
    assert torch.equal(r0["continued2"], r1["continued2"])


# ----------------------------------------------------------------------------------------- released weights
def _tiny_miles() -> Miles:
    cfg = OmegaConf.structured(MilesConfig(
        video={"name": "space_time_vit", **VIDEO, "num_frames": 4},
        text={"name": "hf_text", "config": TEXT_CFG}, embed_dim=24, mask_min_block=2,
    ))
    return Miles(cfg).eval()


def test_released_miles_checkpoint_loads_strictly_and_seeds_the_snapshot(tmp_path):
    """A file in MILES.pth's layout (``text_proj``, ``module.`` prefix, ``state_dict`` nesting): every tensor of
    it is used, the embeddings are the official model's, and the snapshot is a copy of the loaded encoder."""
    sd, video, bert = official_frozen_state(text_proj_name="text_proj", seed=4)
    path = tmp_path / "MILES.pth"
    torch.save({"state_dict": sd, "epoch": 1}, path)
    ours = _tiny_miles()
    report = load_official(ours, path, strict=True)
    assert report.source == "frozen" and not report.ignored and len(report.loaded) == len(sd)
    assert "mask_token" in report.untouched and any(k.startswith("snapshot.") for k in report.untouched)
    assert any("snapshot" in n and "copy of the loaded video_model" in n for n in report.notes)
    for name, p in ours.snapshot.named_parameters():
        assert torch.equal(p, dict(ours.video_model.named_parameters())[name]), name
    assert torch.equal(ours.video_model.pos_embed, video["pos_embed"])
    clip = torch.randn(2, 4, 3, 32, 32)
    texts = ["a dog runs across the park", "two people cook pasta"]
    with torch.no_grad():
        ref_v, ref_t = official_embeddings(sd, video, bert, dict(ours.text_model.tokenize(texts)), clip, "text_proj")
        v = ours.encode_video({"video": clip}).pooled
        t = ours.encode_text({"text": texts}).pooled
    assert (v - ref_v).abs().max() < 1e-5 and (t - ref_t).abs().max() < 1e-5


def test_released_checkpoint_evaluates_through_the_eval_entry_point(tmp_path):
    """``vtp-bench eval --ckpt MILES.pth --method miles``'s path: the model built from the method at overridden
    size, the file loaded strictly, the snapshot seeded, retrieval scored."""
    from vtp_bench.data.synthetic import generate_synthetic
    from vtp_bench.evaluate import evaluate

    hf_tiny = {"model_type": "distilbert", "vocab_size": 30522, "dim": 64, "n_layers": 2, "n_heads": 2,
               "hidden_dim": 128, "max_position_embeddings": 128}  # hf_text's "tiny" preset
    sd, _, _ = official_frozen_state(text_proj_name="text_proj", seed=5, text_cfg=hf_tiny)
    path = tmp_path / "MILES.pth"
    torch.save({"state_dict": sd}, path)
    generate_synthetic(tmp_path / "data" / "synth", num_videos=20, seed=2, grounding_videos=0, progress=False)
    overrides = ["method.video.img_size=32", "method.video.patch_size=8", "method.video.embed_dim=48",
                 "method.video.depth=2", "method.video.num_heads=4", "method.text.preset=tiny",
                 "method.embed_dim=24", "data.img_size=32", "data.num_workers=0", "data.eval_batch_size=8",
                 f"data.root={tmp_path / 'data'}"]
    res = evaluate(path, "synth", "test", overrides=overrides, accelerator="cpu", method="miles")
    assert res["method"] == "miles" and res["checkpoint_source"] == "frozen"
    assert res["checkpoint_load"]["loaded"] == len(sd) and not res["checkpoint_load"]["ignored"]
    assert any("snapshot" in n for n in res["checkpoint_load"]["notes"])
    assert res["num_videos"] == 2 and 0 <= res["metrics"]["t2v/R@1"] <= 100


# ------------------------------------------------------------------------------------------------ paper size
def test_paper_size_parameter_counts():
    """On the meta device: the released model's 180,925,184 parameters (specs/miles.md §1.1) train; the snapshot
    adds a ViT-B/16 (114,168,576) that does not; the mask token adds 768."""
    with torch.device("meta"):
        m = Miles(OmegaConf.structured(MilesConfig()))
    count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    released = [p for n, p in m.named_parameters() if not n.startswith(("snapshot.", "mask_token", "predictor."))]
    assert count(released) == 180_925_184
    assert count(m.snapshot.parameters()) == 114_168_576
    assert count(p for p in m.parameters() if p.requires_grad) == 180_925_184 + 768
    # the official MILES model's 327 state-dict keys, and snapshot.* / snapshot_step / mask_token beside them
    assert sum(1 for k in m.state_dict() if not k.startswith(("snapshot", "mask_token"))) == 327
    assert np.prod(m.mask_token.shape) == 768


# ------------------------------------------------------------------------------------ Lightning resume, exact
def test_step_checkpoints_hold_the_updated_snapshot_and_resume_exactly(tmp_path):
    """A checkpoint saved every N steps holds the snapshot with that step folded in (the update runs before
    Lightning's checkpoint callback), and ``--resume`` from it ends with exactly the uninterrupted run's weights,
    snapshot included."""
    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic

    root = tmp_path / "data"
    generate_synthetic(root / "synth", num_videos=30, seed=4, grounding_videos=0, progress=False)
    base = ["train", "miles_synth", "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.deterministic=true",
            "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0", "method.text.preset=tiny",
            "method.text.freeze=false", "method.video.img_size=32", "method.video.depth=1", "data.img_size=32",
            "method.snapshot_momentum=0.5", "run.ckpt_every_n_steps=2", "optim.warmup_steps=0",
            "trainer.enable_progress_bar=false", f"data.root={root}", f"run.dir={tmp_path / 'runs'}"]
    assert main(base + ["run.version=full"]) == 0
    full = tmp_path / "runs" / "miles_synth" / "full" / "checkpoints"
    mid = torch.load(full / "epoch0-step2.ckpt", map_location="cpu", weights_only=True)
    assert mid["global_step"] == 2 and int(mid["state_dict"]["method.snapshot_step"]) == 2
    assert main(base + ["run.version=resumed", "--resume", str(full / "epoch0-step2.ckpt")]) == 0
    a = torch.load(full / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "runs" / "miles_synth" / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu",
                   weights_only=True)["state_dict"]
    assert int(a["method.snapshot_step"]) == 6 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["method.snapshot.pos_embed"], a["method.video_model.pos_embed"])
