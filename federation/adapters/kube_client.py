"""kubernetes-asyncio's client with its API and model classes imported when first used.

Why: ``import kubernetes_asyncio.client`` imports every API and model class of the Kubernetes API
(65 APIs and 767 models in 36.1: about 1,000 modules, 40 MiB of each agent's RSS; BENCHMARKS.md,
session 24) and the agent uses two APIs and the dozen models of a Service. The generated package
finds a model by name when it deserializes (``getattr(kubernetes_asyncio.client.models,
"V1Service")``), so packages whose names are imported on first use serve it, and us, the very
same classes.

How: before anything imports the library, ``kubernetes_asyncio.client`` and its ``api`` and
``models`` subpackages are registered as packages that do not run their ``__init__``; each
resolves a name on first use from the table that ``__init__`` itself would import (read from its
source, so a release that moves a class moves it here too). Submodules (``api_client``, ``rest``,
``watch``...) import as always.

If the library was imported before this module (an embedding program, a test), it is left as it
is: the same classes, only the memory is not saved. :func:`lazily_loaded` says which it is.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Mapping
from pathlib import Path

CLIENT: str = "kubernetes_asyncio.client"
_LAZY_PACKAGES = (CLIENT, f"{CLIENT}.api", f"{CLIENT}.models")
_MARK = "__federation_lazy__"  # set on the packages registered here


def _read_init(init: Path) -> tuple[dict[str, str], str | None]:
    """What an ``__init__.py`` imports, ``from <module> import <name>``: name -> module; and the
    ``__version__`` it declares (read once: the client's is a thousand lines)."""
    table: dict[str, str] = {}
    version = None
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            module = node.module
            table.update((a.asname or a.name, module) for a in node.names if module != "__future__")
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            version = str(ast.literal_eval(node.value))
    return table, version


def _lazy_package(name: str, directory: Path) -> types.ModuleType:
    table, version = _read_init(directory / "__init__.py")
    package = types.ModuleType(name, f"{name}, its names imported on first use")
    if version is not None:
        package.__dict__["__version__"] = version
    # No loader and no ``__file__``: its ``__init__`` never runs (``importlib.reload`` would run
    # it, importing everything as the library does).
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(directory)]
    package.__spec__ = spec
    package.__path__ = [str(directory)]
    package.__dict__["__all__"] = list(table)  # (ModuleType declares no __all__ to assign)
    package.__dict__[_MARK] = True

    def resolve(attr: str) -> object:
        module = table.get(attr)
        if module is not None:
            value = getattr(importlib.import_module(module), attr)
        elif (directory / f"{attr}.py").is_file() or (directory / attr / "__init__.py").is_file():
            # A submodule asked for as an attribute (``client.rest``): the eager package has
            # imported every one by then.
            value = importlib.import_module(f"{name}.{attr}")
        else:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        setattr(package, attr, value)  # once: later lookups are plain attribute reads
        return value

    package.__getattr__ = resolve  # type: ignore[method-assign]  # (PEP 562)
    package.__dir__ = lambda: sorted(set(table) | set(vars(package)))  # type: ignore[method-assign]
    return package


def install() -> bool:
    """Register the lazy packages; False when the library was already imported (then nothing
    changes) or cannot be found."""
    if any(name in sys.modules for name in ("kubernetes_asyncio", *_LAZY_PACKAGES)):
        return False
    spec = importlib.util.find_spec("kubernetes_asyncio")  # (finds; imports nothing)
    if spec is None or not spec.submodule_search_locations:
        return False
    client_dir = Path(next(iter(spec.submodule_search_locations))) / "client"
    packages: Mapping[str, types.ModuleType] = {
        name: _lazy_package(name, client_dir / Path(*name.split(".")[2:]))
        for name in _LAZY_PACKAGES
    }
    client = packages[CLIENT]
    for name, package in packages.items():
        sys.modules[name] = package
        if name != CLIENT:
            setattr(client, name.rsplit(".", 1)[1], package)
    return True


def lazily_loaded() -> bool:
    """Whether the client in use resolves its classes on first use (this module's doing)."""
    module = sys.modules.get(CLIENT)
    return module is not None and getattr(module, _MARK, False) is True


install()

# (Imported after ``install`` on purpose: these are what the kube adapters use.)
from kubernetes_asyncio import client, config  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402
from kubernetes_asyncio.watch import Watch  # noqa: E402

__all__ = ["ApiException", "Watch", "client", "config", "install", "lazily_loaded"]
