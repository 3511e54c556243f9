"""Parameter counts at paper size (built on the meta device: no memory, no weights), printed by
``vtp-bench list --params``, against the official numbers and against the official model classes."""

from __future__ import annotations

import torch

from vtp_bench.cli import main
from vtp_bench.models.params import FULL_CLIP, count_parameters, full_clip_param_counts, preset_param_counts

OFFICIAL = {  # specs: promptswitch.md §6, eval_protocols.md §3.3, miles.md §1.1, hf_text's DistilBERT config
    (FULL_CLIP, "ViT-B-32"): 151_277_313,
    (FULL_CLIP, "ViT-B-16"): 149_620_737,
    ("clip_vit", "ViT-B-32"): 87_849_216,
    ("clip_vit", "ViT-B-16"): 86_192_640,
    ("clip_text", "ViT-B-32"): 63_428_096,
    ("space_time_vit", "base"): 114_168_576,  # Frozen's ViT-B/16, 4 frames, without the 1000-way head
    ("hf_text", "distilbert-base"): 66_362_880,
    ("object_transformer", "base"): 86_880_768,  # DemoVLP, 8 frames, 30 regions (demovlp.md §1.2, ran)
}


def test_paper_sizes_match_the_official_counts(capsys):
    rows = preset_param_counts()
    counts = {(n, p): c for n, p, c in rows + full_clip_param_counts(rows)}
    for key, expected in OFFICIAL.items():
        assert counts[key] == expected, key
    main(["list", "--params"])
    out = capsys.readouterr().out
    assert f"| {FULL_CLIP} | ViT-B-32 | 151,277,313 |" in out
    assert "| space_time_vit | base | 114,168,576 |" in out and "| hf_text | distilbert-base | 66,362,880 |" in out


def test_counts_equal_the_official_model_classes():
    """open_clip's own CLIP (both towers and logit_scale) and HuggingFace's DistilBertModel, independently built."""
    from open_clip import get_model_config
    from open_clip.model import CLIP
    from transformers import DistilBertConfig, DistilBertModel

    with torch.device("meta"):
        b32 = count_parameters(CLIP(**get_model_config("ViT-B-32")))
        b16 = count_parameters(CLIP(**get_model_config("ViT-B-16")))
        bert = count_parameters(DistilBertModel(DistilBertConfig()))
    assert (b32, b16, bert) == (151_277_313, 149_620_737, 66_362_880)
