"""Method discovery: every `methods/*.py` file and every `fedicra.methods` entry point registers its
method class with `@register`. A duplicate name or a plugin that fails to import stops with the
plugin's real traceback (no silent skipping)."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from fedicra.errors import UserError
from fedicra.fl.method import Method

_REGISTRY: dict[str, type[Method]] = {}
_SOURCES: dict[str, str] = {}
_LOADED = False

# The repository's methods folder, plus any folders named in FEDICRA_METHODS_PATH (os.pathsep-separated).
DEFAULT_METHODS_DIR = Path(__file__).resolve().parents[2] / "methods"


class DuplicateMethodError(RuntimeError):
    pass


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under `cls.name`."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"@register expects a Method subclass, got {cls!r}")
    if not cls.name:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no `name`")
    source = f"{cls.__module__}.{cls.__qualname__}"
    if cls.name in _REGISTRY and _SOURCES[cls.name] != source:
        raise DuplicateMethodError(f"method name {cls.name!r} is registered twice: {_SOURCES[cls.name]} and {source}")
    _REGISTRY[cls.name] = cls
    _SOURCES[cls.name] = source
    return cls


def method_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("FEDICRA_METHODS_PATH", "").split(os.pathsep) if p]
    return [DEFAULT_METHODS_DIR, *extra]


def _load_file(path: Path) -> None:
    module_name = f"fedicra_methods.{path.stem}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


def load_methods() -> dict[str, type[Method]]:
    """Import every plugin once; returns {name: class}."""
    global _LOADED
    if not _LOADED:
        for folder in method_dirs():
            for path in sorted(folder.glob("*.py")):
                if not path.name.startswith("_"):
                    _load_file(path)
        for entry in importlib.metadata.entry_points(group="fedicra.methods"):
            importlib.import_module(entry.value.split(":")[0])
        _LOADED = True
    return dict(_REGISTRY)


def get_method(name: str) -> type[Method]:
    methods = load_methods()
    if name not in methods:
        raise UserError(f"method {name!r} is unknown (available: {', '.join(sorted(methods))})")
    return methods[name]


def build_method(config: dict) -> Method:
    return get_method(config["method"])(config.get("method_params") or {}, faithful=config.get("faithful", False))
