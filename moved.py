"""Names that moved to another module keep working from their old one, for now, with a warning.

`utils` and `runs` once held every helper; their old names forward to the new homes, so notebooks
and scripts written against them still run. Importing this module does nothing.
"""

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def homes(**names_by_module: tuple[str, ...]) -> dict[str, str]:
    """{name: the module it lives in now}, from module=(name, ...) pairs."""
    return {name: module for module, names in names_by_module.items() for name in names}


def forwarder(old_module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module-level __getattr__ for `old_module` that serves the names in `moved` from their
    new modules, each with a DeprecationWarning naming where to import it from."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new_module = moved[name]
        warnings.warn(
            f"{old_module}.{name} has moved to {new_module}.{name}; import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), name)

    return __getattr__
