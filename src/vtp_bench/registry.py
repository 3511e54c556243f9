"""One registry type for encoders, methods and datasets.

Entries register themselves with a decorator in the module that defines them; the modules are imported
lazily (on first lookup) so that ``import vtp_bench`` stays cheap and an optional dependency of one
encoder never breaks the others.

Code outside the package registers the same way: ``VTP_PLUGINS`` lists Python files or importable module names
(separated by ``os.pathsep``), imported on the first lookup of any registry, in every process of a run (the
launchers pass the environment on). A method kept in one file of your own project is then
``VTP_PLUGINS=my_method.py vtp-bench train ...``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
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
            load_plugins()

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


_PLUGINS_LOADED: set[str] = set()


def load_plugins() -> None:
    """Import every entry of ``VTP_PLUGINS`` once (a ``.py`` path or a module name)."""
    for entry in filter(None, os.environ.get("VTP_PLUGINS", "").split(os.pathsep)):
        if entry in _PLUGINS_LOADED:
            continue
        _PLUGINS_LOADED.add(entry)
        if entry.endswith(".py"):
            path = Path(entry).resolve()
            if not path.is_file():
                raise RegistryError(f"VTP_PLUGINS names {entry}, which does not exist")
            name = f"vtp_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            importlib.import_module(entry)


ENCODERS = Registry("encoder", packages=("vtp_bench.models.video", "vtp_bench.models.text"))
METHODS = Registry("method", packages=("vtp_bench.methods",))
DATASETS = Registry("dataset", modules=("vtp_bench.data.catalog",))
TASKS = Registry("task", packages=("vtp_bench.tasks",))
