"""The two declarations of a released checkpoint format (``models.checkpoints`` is the loader that uses them):
the **layout** a file has, registered by the file of the model it belongs to, and the **target** mixin through
which a tower or method says where a layout's keys go in it. Kept apart from the loader so that defining a model
imports no checkpoint reading code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from vtp_bench.choices import TEMPORAL_FIXES  # noqa: F401 (kept here for the modules that use it)

__all__ = ["CheckpointLayout", "CheckpointTarget", "LayoutMap", "TEMPORAL_FIXES", "prefixed"]


@dataclass
class LayoutMap:
    """Where a layout's (normalised) keys go in one module: checkpoint prefix -> module prefix (the longest prefix
    wins). ``optional``: checkpoint prefixes a file may lack (that part stays as built and is reported);
    ``unused``: checkpoint prefixes this module has no place for by design (reported, never an error);
    ``derived``: module keys no file holds, set by ``after_official_load`` (not reported as left untouched)."""

    prefixes: dict[str, str]
    optional: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()


class CheckpointLayout:
    """A released checkpoint format. Subclass, set ``keys`` (the key scheme ``normalise`` produces, which targets
    map: ``frozen``, ``open_clip``, ...), and register it: ``@CHECKPOINT_LAYOUTS.register("name")``."""

    keys: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()  # other names a user may give (--ckpt-source, init.source)
    family: ClassVar[str] = ""  # layouts of one format under two names (openai / open_clip): never contradicted
    priority: ClassVar[int] = 0  # detection order, highest first: a layout whose keys contain another's goes first

    def __init__(self, name: str) -> None:
        self.name = name

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def normalise(self, sd: Mapping[str, Any]) -> dict[str, Any]:
        """The file's keys renamed into the ``keys`` scheme; bookkeeping buffers dropped."""
        return {k: v for k, v in sd.items() if not k.endswith("position_ids")}


class CheckpointTarget:
    """Mixin of every tower and method: where a released layout's keys go in this module."""

    # a tower takes its part of a file (the other tower, the projections are reported, never an error); a method
    # loaded strictly has a place for every key or says which part it lacks
    takes_part_of_file: ClassVar[bool] = False

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """The map of ``layout``'s keys onto this module, or None when it takes none of them itself."""
        return None

    def after_official_load(self, loaded: list[str]) -> list[str]:
        """Called after a load with the module keys that were set: derive parts no released file holds (MILES'
        snapshot); returns notes for the load report."""
        return []



def prefixed(name: str, found: LayoutMap | None) -> dict[str, str]:
    """A sub-module's map with the sub-module's attribute name put in front of its targets (``{}`` for None)."""
    return {src: f"{name}.{dst}" for src, dst in found.prefixes.items()} if found is not None else {}
