"""Import the firmware's plain-Python modules (``firmware/*.py``) on the host.

The step engine, safety checks, frames and estimator are the same files the board runs;
the host imports them from the repository instead of keeping a copy. Each one is loaded
once, as ``cellbench.firmware.<name>`` (``module("steps")``), never as a top-level
module: nothing is put on ``sys.path`` and no bare name such as ``link`` or ``record``
appears in ``sys.modules``.

The firmware imports its siblings by their bare names (``import steps``), as the board's
flat filesystem requires. Each firmware module is therefore executed with its own
``__import__`` (in the module's ``__builtins__``), which resolves a bare firmware name to
this loader, at import time and in functions that import later (link.estimator_class).
"""

import builtins
import importlib.util
import sys
import threading
import types

from .paths import FIRMWARE

PACKAGE = "cellbench.firmware"

# A module is in sys.modules before it has run (siblings import each other), so a second
# thread must not see it until its loader is done: loads are serialised. Re-entrant: a
# firmware module's own sibling imports come back here on the loading thread.
_LOADING = threading.RLock()


def module(name):
    """Return the firmware module ``name`` (for example ``"frame"``), loaded from firmware/
    as ``cellbench.firmware.<name>``; ImportError if firmware/ has no such file."""
    full = f"{PACKAGE}.{name}"
    with _LOADING:
        loaded = sys.modules.get(full)
        return loaded if loaded is not None else _load(name, full)


def _load(name, full):
    path = FIRMWARE / f"{name}.py"
    if not _is_firmware(name):
        raise ImportError(f"no firmware module {name!r} in {FIRMWARE}", name=full, path=str(path))
    spec = importlib.util.spec_from_file_location(full, path)
    mod = importlib.util.module_from_spec(spec)
    mod.__builtins__ = _BUILTINS  # bare sibling imports come back here
    sys.modules[full] = mod  # before it runs: firmware modules may import each other
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[full]
        raise
    setattr(_package(), name, mod)
    return mod


def _package():
    # cellbench.firmware itself: a namespace holding the loaded modules, no files of its own.
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        pkg = types.ModuleType(PACKAGE, "The firmware modules cellbench.fw loaded.")
        pkg.__path__ = []
        sys.modules[PACKAGE] = pkg
    return pkg


def _is_firmware(name):
    return "." not in name and name not in ("main", "manifest") and (FIRMWARE / f"{name}.py").is_file()


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    # A firmware module's `import steps` / `from controller import X`: its sibling file.
    if level == 0 and _is_firmware(name):
        return module(name)
    return builtins.__import__(name, globals, locals, fromlist, level)


_BUILTINS = dict(vars(builtins), __import__=_import)
