"""VTPModule behaviour that needs no data on disk: non-finite losses stop the run with a useful message."""

import math

import pytest
import torch

from vtp_bench.config import load_config, to_dict
from vtp_bench.lit import NonFiniteLossError, VTPModule


def test_nan_loss_names_step_terms_and_videos(monkeypatch):
    cfg = load_config("frozen_synth", ["method.text.preset=tiny", "method.video.img_size=32", "data.img_size=32"])
    module = VTPModule(to_dict(cfg))
    monkeypatch.setattr(module.method, "losses", lambda batch: {"nce_t2v": torch.tensor(math.nan),
                                                                "nce_v2t": torch.tensor(1.0)})
    batch = {"size": 2, "skipped": [], "skipped_errors": [], "video_id": ["synth_1", "synth_7"]}
    with pytest.raises(NonFiniteLossError) as e:
        module.training_step(batch, 0)
    msg = str(e.value)
    assert "step 0" in msg and "nce_t2v=nan" in msg and "nce_v2t=1" in msg and "synth_7" in msg
