"""JAX's persistent compilation cache for jbo's entry points (CLI, experiments, calculator).

A second process that decomposes the same architecture at the same shapes loads the compiled
programs from disk instead of compiling them again. Turned on by :func:`enable` at the entry
points only, never by ``import jbo`` (a library must not flip a caller's global JAX config).

* directory: ``$JBO_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/jbo/xla`` (``~/.cache/jbo/xla``);
* ``JBO_CACHE_DIR=off`` (or ``0``, ``none``, empty) disables it;
* programs that compiled in under :data:`MIN_COMPILE_S` are not stored (tiny ops).

On disk: one entry per compiled program, ~0.1-2 MB each (the executable); a zoo model at one
cluster size is a few programs. Delete the directory to reclaim it; JAX rebuilds it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["ENV", "MIN_COMPILE_S", "cache_dir", "enable", "counts"]

ENV = "JBO_CACHE_DIR"
#: Programs that compile faster than this (s) are not written to the cache.
MIN_COMPILE_S = 0.2
_OFF = {"", "0", "off", "none", "false", "no"}
_counts = {"hits": 0, "misses": 0}
_listening = False


def cache_dir() -> Path | None:
    """The cache directory the environment asks for, or None when disabled."""
    text = os.environ.get(ENV)
    if text is not None:
        return None if text.strip().lower() in _OFF else Path(text).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jbo" / "xla"


def enable() -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (idempotent).

    Returns the directory, or None when disabled (``JBO_CACHE_DIR=off``) or when the caller
    already set ``jax_compilation_cache_dir`` (theirs is kept). Never raises for an
    unwritable directory: JAX then compiles as usual.
    """
    global _listening
    path = cache_dir()
    if path is None or jax.config.jax_compilation_cache_dir not in (None, str(path)):
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if not _listening:
        jax.monitoring.register_event_listener(_count)
        _listening = True
    return path


def _count(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _counts["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        _counts["misses"] += 1


def counts() -> dict[str, int]:
    """Persistent-cache hits and misses of this process since :func:`enable`."""
    return dict(_counts)
