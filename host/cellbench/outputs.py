"""Where a command writes: never over an existing file without --force, never over an input.

Every command that writes (run, estimate, simulate, fit, import, analyze, calibrate)
checks its outputs here before it reads or starts anything, with the same words:
``out: PATH exists (use --force to overwrite)`` and ``out: PATH is also an input ...``.
"""

from pathlib import Path

from .errors import InputError


def same_file(a, b):
    """True when paths ``a`` and ``b`` name one file (links and ``..`` resolved)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(path, force=False, inputs=(), field="out"):
    """``path`` as a Path once it may be written; InputError (naming ``field``) when it is
    one of ``inputs`` (even with ``force``) or exists and ``force`` is false."""
    p = Path(path)
    for source in inputs:
        if source is not None and same_file(p, source):
            raise InputError(f"{field}: {p} is also an input ({source}); write elsewhere")
    if p.exists() and not force:
        raise InputError(f"{field}: {p} exists (use --force to overwrite)")
    return p


def check_output_dir(path, force=False, inputs=(), field="out"):
    """The same for a folder of outputs: refused when it holds files (unless ``force``)
    or holds one of ``inputs`` (whatever ``force`` says, its files may have the same names)."""
    d = Path(path)
    for source in inputs:
        if source is not None and (same_file(d, Path(source).parent) or same_file(d, source)):
            raise InputError(f"{field}: {d} holds an input ({source}); write elsewhere")
    if d.is_file():
        raise InputError(f"{field}: {d} is a file, not a folder")
    if d.is_dir() and any(d.iterdir()) and not force:
        raise InputError(f"{field}: {d} exists (use --force to overwrite)")
    return d
