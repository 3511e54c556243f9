"""One registry type for encoders, methods and datasets.

Entries register themselves with a decorator in the module that defines them; the modules are imported
lazily (on first lookup) so that ``import vtp_bench`` stays cheap and an optional dependency of one
encoder never breaks the others.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate registry name. ``str()`` is the full message (KeyError would quote it)."""

    def __str__(self) -> str:  # KeyError.__str__ wraps the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry:
    """Name -> builder (class or function). Duplicate names are refused; unknown names list the known ones."""

    def __init__(self, kind: str, modules: tuple[str, ...] = (), packages: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._modules = modules
        self._packages = packages  # every module in these packages is imported: a new file is enough
        self._loaded = False
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered by {self._entries[name].__module__}; "
                    "pick another name"
                )
            self._entries[name] = obj  # type: ignore[assignment]
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            import pkgutil

            mods = list(self._modules)
            for pkg in self._packages:
                path = importlib.import_module(pkg).__path__
                mods += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(path) if not m.name.startswith("_")]
            for mod in mods:
                importlib.import_module(mod)

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ENCODERS = Registry("encoder", packages=("vtp_bench.models.video", "vtp_bench.models.text"))
METHODS = Registry("method", packages=("vtp_bench.methods",))
DATASETS = Registry("dataset", modules=("vtp_bench.data.catalog",))
