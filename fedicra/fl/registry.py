"""Method discovery: the built-in methods (the top-level `methods/` folder, installed as the package
`fedicra_methods`), every folder on FEDICRA_METHODS_PATH and every `fedicra.methods` entry point register
their method classes with `@register`. A duplicate method name, a duplicate module file name, or a plugin
that fails to import stops with a clear error (the plugin's real traceback; no silent skipping)."""
from __future__ import annotations

import importlib
import importlib.machinery
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

BUILTIN_PACKAGE = "fedicra_methods"      # built-in methods (pyproject maps methods/ to it)
USER_PACKAGE = "fedicra_user_methods"    # modules loaded from FEDICRA_METHODS_PATH folders


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


def builtin_methods_dir() -> Path:
    """The checkout's `methods/` when fedicra runs from a source tree, else the installed package."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "methods" / "__init__.py").is_file():
        return checkout / "methods"
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the built-in methods package {BUILTIN_PACKAGE!r} is not installed; reinstall fedicra")
    return Path(list(spec.submodule_search_locations)[0])


def method_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("FEDICRA_METHODS_PATH", "").split(os.pathsep) if p]
    return [builtin_methods_dir(), *extra]


def _package_module(name: str, folder: Path) -> None:
    """An empty parent package, so plugin modules have a real dotted name (pickling, tracebacks)."""
    if name not in sys.modules:
        package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(name, None, is_package=True))
        package.__path__ = [str(folder)]
        sys.modules[name] = package


def _load_file(path: Path, package: str, seen: dict[str, Path]) -> None:
    if path.stem in seen and seen[path.stem].resolve() != path.resolve():
        raise DuplicateMethodError(f"two method files are named {path.name!r}: {seen[path.stem]} and {path}; "
                                   "rename one")
    seen[path.stem] = path
    module_name = f"{package}.{path.stem}"
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
        seen: dict[str, Path] = {}
        for index, folder in enumerate(method_dirs()):
            package = BUILTIN_PACKAGE if index == 0 else USER_PACKAGE
            _package_module(package, folder)
            for path in sorted(folder.glob("*.py")):
                if not path.name.startswith("_"):
                    _load_file(path, package, seen)
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
    method = get_method(config["method"])(config.get("method_params") or {}, faithful=config.get("faithful", False))
    method.configure(config)
    return method
