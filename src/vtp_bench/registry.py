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

    def _module_names(self) -> list[str]:
        import pkgutil

        mods = list(self._modules)
        for pkg in self._packages:
            path = importlib.import_module(pkg).__path__
            mods += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(path) if not m.name.startswith("_")]
        return mods

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in self._module_names():
                importlib.import_module(mod)
            load_plugins()

    def declared_names(self) -> list[str]:
        """``names()`` read from the registering modules' source where it shows every name (``@X.register("name")``),
        without importing them: ``vtp-bench list`` answers at once instead of importing torch and every model. A
        module that registers another way (a computed name) is imported, and so are the plugins."""
        if self._loaded:
            return self.names()
        var = next((k for k, v in globals().items() if v is self), None)  # METHODS, ...: as modules import it
        if var is None:  # a registry defined elsewhere
            return self.names()
        names = set(self._entries)
        for mod in self._module_names():
            found = None if mod in sys.modules else _literal_registrations(mod, var)
            if found is None:
                importlib.import_module(mod)
            else:
                names |= found
        load_plugins()
        return sorted(names | set(self._entries))

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


def _literal_registrations(module: str, var: str) -> set[str] | None:
    """The names ``module`` registers with ``<var>.register("literal")`` (``var`` imported from this module, under
    any alias); None when it calls ``register`` of that registry otherwise, or its source cannot be read."""
    import ast

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module == __name__ for a in node.names if a.name == var}
    names: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
                and isinstance(node.func.value, ast.Name) and node.func.value.id in aliases):
            continue
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            return None
        names.add(arg.value)
    return names


def experiments_dir() -> Path:
    """The experiments that ship inside the package (``vtp_bench/experiments``; the repository's top-level
    ``experiments/`` is a link to them, where users read and edit them): here, not in ``config``, so listing them
    needs no torch."""
    return Path(__file__).resolve().parent / "experiments"


def list_experiments() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


_PLUGINS_LOADED: set[str] = set()


def load_plugins() -> None:
    """Import every entry of ``VTP_PLUGINS`` once (a ``.py`` path or a module name)."""
    for entry in filter(None, os.environ.get("VTP_PLUGINS", "").split(os.pathsep)):
        if entry in _PLUGINS_LOADED:
            continue
        _PLUGINS_LOADED.add(entry)
        try:
            _import_plugin(entry)
        except RegistryError:
            raise
        except Exception as e:  # a plugin's own error: where it happened, in one line (its code is not ours)
            import traceback

            frame = traceback.extract_tb(e.__traceback__)[-1]
            raise RegistryError(f"VTP_PLUGINS: importing {entry} failed at {frame.filename}:{frame.lineno}: "
                                f"{type(e).__name__}: {e}") from e


def _import_plugin(entry: str) -> None:
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
# per-item inputs a method reads besides (or instead of) the clip, one provider per file (data/inputs/)
INPUTS = Registry("input", packages=("vtp_bench.data.inputs",))
# how a dataset's clips are stored and read (data.format): one file each in data/formats/
DATA_FORMATS = Registry("data format", packages=("vtp_bench.data.formats",))
# released checkpoint formats, declared by the file of the model each belongs to (models.checkpoints)
CHECKPOINT_LAYOUTS = Registry("checkpoint layout", modules=("vtp_bench.models.clip_common",),
                              packages=("vtp_bench.models.video", "vtp_bench.models.text", "vtp_bench.methods"))
