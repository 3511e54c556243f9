"""Build an encoder from its config section, naming the config key when an argument is wrong."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from torch import nn

from vtp_bench.errors import ConfigError
from vtp_bench.registry import ENCODERS, RegistryError


def resolve_encoder(spec: Mapping[str, Any], key: str) -> tuple[type, dict[str, Any]]:
    """``spec`` = {"name": <ENCODERS name>, "preset"?: ..., **constructor kwargs} -> (class, kwargs);
    ``key`` is the spec's config path, named in every error."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if not name:
        raise ConfigError(f"config key '{key}.name' is missing (one of: {', '.join(ENCODERS.names())})")
    try:
        cls = ENCODERS.get(name)
    except RegistryError as e:
        raise ConfigError(f"{key}.name: {e}") from None
    presets = getattr(cls, "PRESETS", {})
    if "preset" in spec and "preset" not in inspect.signature(cls).parameters:
        preset = spec.pop("preset")
        if preset not in presets:
            raise ConfigError(f"{key}.preset: unknown preset {preset!r} for {name!r}; known: {', '.join(presets)}")
        spec = {**presets[preset], **spec}
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(spec) - set(params))
        if unknown:
            raise ConfigError(
                f"unknown config key '{key}.{unknown[0]}' for encoder {name!r} (known: {', '.join(params)})"
            )
    return cls, spec


def build_encoder(spec: Mapping[str, Any], key: str) -> nn.Module:
    cls, kwargs = resolve_encoder(spec, key)
    return cls(**kwargs)
