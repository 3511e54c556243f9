"""Zero-shot classification metrics: every video ranked against one text per class (action recognition cast as
video-to-text retrieval, as MCQ and MILES evaluate HMDB51 and UCF101).

Ties are scored as the retrieval metrics score them (``metrics/retrieval.py``, docs/protocols.md "Zero-shot
classification"): the expected value under uniformly random tie-breaking. A video whose true class ties with ``m - 1``
other classes, below ``g`` classes that score strictly higher, is a top-k hit with probability
``clamp((k - g) / m, 0, 1)``; a collapsed model that gives every class the same score gets chance (100 / C),
never 100 %. ``ties="optimistic"`` (the true class wins every tie) is there to reproduce Frozen-style numbers.

The prompt: class names become texts through a template. The MILES paper's template is not in the released code
and the paper body could not be read (docs/methods/miles.md), so ``PROMPT_TEMPLATE`` is the class name
alone, the plain reading of "class names as text queries". It is a configurable default, not a verified fact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["PROMPT_TEMPLATE", "PROMPT_TEMPLATES", "class_prompts", "zeroshot_metrics"]

# UNVERIFIED: MILES/MCQ released no zero-shot action-recognition code or template; the class name is the text.
PROMPT_TEMPLATE = "{}"
# Named templates a config may pick. "miles" is the default above; "video_of" is the usual CLIP-style
# alternative; "synth_object" is the template the synthetic dataset's classes.json ships ("an object moves left").
PROMPT_TEMPLATES: dict[str, str] = {
    "miles": PROMPT_TEMPLATE,
    "video_of": "a video of a person {}.",
    "synth_object": "an object {}",
}


def class_prompts(class_names: Sequence[str], template: str = PROMPT_TEMPLATE) -> list[str]:
    """One text per class: ``template.format(name)``. ``template`` is a template with one ``{}`` or the name of
    one in ``PROMPT_TEMPLATES``."""
    template = PROMPT_TEMPLATES.get(template, template)
    if template.count("{}") != 1:
        raise ValueError(f"a prompt template needs exactly one '{{}}' for the class name, got {template!r} "
                         f"(or one of: {', '.join(PROMPT_TEMPLATES)})")
    if not class_names:
        raise ValueError("no class names")
    return [template.format(name) for name in class_names]


@torch.no_grad()
def zeroshot_metrics(
    sim: Tensor,
    labels: Tensor | Sequence[int],
    topk: Sequence[int] = (1, 5),
    *,
    ties: str = "expected",
    return_per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, list[float]]]:
    """Top-k accuracies and the mean per-class (top-1) accuracy, in percent.

    Args:
        sim: [num_videos, num_classes], higher = more similar (e.g. ``method.similarity(prompts, videos).T``).
            Never modified.
        labels: [num_videos] integer class index of each video, in ``[0, num_classes)``.
        topk: the k of the ``top{k}`` keys; k larger than the number of classes scores 100.
        ties: ``"expected"`` (uniformly random tie-breaking, in expectation; default) or ``"optimistic"``.
        return_per_query: also return each video's outcome, ``top{k}`` (100 x P(hit), whose mean is the metric)
            and ``labels`` (its class: ``mean_class_acc`` is the mean over classes of the per-class mean of
            ``top1``), in row order.

    Returns:
        ``{"top1": ..., "top5": ..., "mean_class_acc": ...}`` (one ``top{k}`` per k) as Python floats.
        ``mean_class_acc`` averages the top-1 accuracy of each class that has at least one video (classes
        without a video in ``labels`` take no part), the balanced accuracy UCF101/HMDB51 papers call "mean
        class accuracy".

    Raises:
        ValueError: wrong shapes, NaN in ``sim``, labels outside ``[0, num_classes)``, non-integer labels, an
            unknown ``ties`` or a k < 1.
    """
    if ties not in ("expected", "optimistic"):
        raise ValueError(f"ties must be 'expected' or 'optimistic', got {ties!r}")
    ks = tuple(int(k) for k in topk)
    if not ks or min(ks) < 1:
        raise ValueError(f"topk must be positive integers, got {tuple(topk)}")
    sim = torch.as_tensor(sim)
    if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"sim must be a non-empty [num_videos, num_classes] matrix, got shape {tuple(sim.shape)}")
    if sim.is_complex():
        raise ValueError("sim must be real-valued")
    if not sim.is_floating_point():
        sim = sim.to(torch.float64)
    nan = int(torch.isnan(sim).sum())
    if nan:
        raise ValueError(f"sim holds {nan} NaN values; a NaN similarity cannot be ranked")
    nv, nc = sim.shape
    lab = torch.as_tensor(labels)
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {lab.dtype}")
    if lab.shape != (nv,):
        raise ValueError(f"labels must have shape [{nv}] (one class per row of sim), got {tuple(lab.shape)}")
    lab = lab.to(device=sim.device, dtype=torch.long)
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= nc:
        raise ValueError(f"labels hold class indices in [{lo}, {hi}], outside the {nc} classes [0, {nc})")

    gt = sim.gather(1, lab[:, None])  # [V, 1]: each video's score for its own class
    g = (sim > gt).sum(1).double().cpu()  # classes strictly above the true one
    m = (sim == gt).sum(1).double().cpu()  # the tie group, the true class included

    def hit(k: int) -> Tensor:  # P(true class among the first k), per video
        if ties == "optimistic":
            return (g < k).double()
        return ((k - g) / m).clamp(0.0, 1.0)

    out = {f"top{k}": float(100.0 * hit(k).mean()) for k in ks}
    top1 = hit(1)
    lab_cpu = lab.cpu()
    counts = torch.bincount(lab_cpu, minlength=nc).double()
    per_class = torch.zeros(nc, dtype=torch.float64).scatter_add_(0, lab_cpu, top1)
    present = counts > 0
    out["mean_class_acc"] = float(100.0 * (per_class[present] / counts[present]).mean())
    if not return_per_query:
        return out
    per_query: dict[str, list[float]] = {f"top{k}": (100.0 * hit(k)).tolist() for k in ks}
    per_query["labels"] = lab_cpu.tolist()
    return out, per_query
