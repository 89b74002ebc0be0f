"""glibc malloc settings for CPU work: keep freed memory for reuse, or make RSS honest.

Why keep freed memory: glibc hands freed heap memory back to the kernel as soon as more than
its trim threshold is free at the top of the heap (by default twice the largest freed block,
about 50 MB after one SmolLM2 forward). Capturing every hook point keeps ~330 MB alive; when
the cache is dropped that memory goes back, and the next call gets it again as fresh pages
the kernel must zero and map one 4 KiB page at a time (80k page faults, a quarter of a
128-token forward on 2 cores; the no-hook forward loses ~8% the same way). Keeping up to
``limit`` bytes of freed heap removes that cost. The price: after a large call the process
RSS stays at its high-water mark (at most ``limit`` above what is live) until
:func:`trim_heap` or the next call reuses it.

:func:`apply_default_policy` runs once when a CPU model is loaded. It changes nothing when the
user has chosen: ``TORCH_MI_KEEP_FREED_MEMORY=0`` (off) or ``=N`` (N MiB), glibc's own
``MALLOC_*_`` / ``GLIBC_TUNABLES`` malloc settings, a preloaded jemalloc/tcmalloc/mimalloc,
or :func:`fix_malloc_mmap_threshold` (the measuring mode the memory tools use).
"""

from __future__ import annotations

import ctypes
import os
import sys

from ..errors import ConfigError

ENV = "TORCH_MI_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts; bigger blocks stay mmapped
_GLIBC_TRIM_THRESHOLD = 128 << 10  # glibc's own default
_DEFAULT_LIMIT_CAP = 1 << 30
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_state: dict[str, object] = {"policy": "glibc defaults"}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError off glibc (musl)
    except (OSError, AttributeError):
        return None
    return libc


def fix_malloc_mmap_threshold(threshold: int = 65536) -> bool:
    """Make glibc mmap every allocation >= ``threshold`` bytes, so freed tensors leave RSS.

    Process-wide; meant for measuring scripts and the CLI (it wins over the default
    policy, also when a model is loaded afterwards). False where not glibc.
    """
    libc = _libc()
    done = bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD) == 1)
    if done:
        _state["policy"] = f"measuring: blocks >= {int(threshold)} bytes mmapped"
    return done


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim``); False where unsupported."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)


def keep_freed_memory(limit_bytes: int) -> bool:
    """Let glibc keep up to ``limit_bytes`` of freed heap for reuse instead of returning it
    to the kernel; blocks up to 32 MiB come from the heap. False where not glibc."""
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < 0:
        raise ConfigError(f"keep_freed_memory needs a byte count >= 0, got {limit_bytes!r}")
    libc = _libc()
    if libc is None:
        return False
    done = (libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, min(limit_bytes, 2**31 - 1)) == 1)
    if done:
        _state["policy"] = f"keep up to {limit_bytes >> 20} MiB of freed heap"
    return done


def allocator_policy() -> str:
    """What this process's malloc settings are, in words (for reports and benchmarks)."""
    return str(_state["policy"])


def _user_chose_allocator() -> str | None:
    """Why the user's own allocator settings win, or None."""
    if any(name in os.environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
        return "a preloaded allocator (LD_PRELOAD)"
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    if any(key.startswith("MALLOC_") and key.endswith("_") for key in os.environ):
        return "MALLOC_*_ environment variables"
    if str(_state["policy"]).startswith("measuring"):
        return "fix_malloc_mmap_threshold (measuring mode)"
    return None


def _limit_from_env() -> int | None:
    """The limit ``TORCH_MI_KEEP_FREED_MEMORY`` asks for (bytes), or None when unset."""
    text = os.environ.get(ENV)
    if text is None or not text.strip():
        return None
    try:
        mib = int(text.strip())
    except ValueError:
        mib = -1
    if mib < 0:
        raise ConfigError(f"{ENV}={text!r}: expected a whole number of MiB (0 turns keeping "
                          f"freed memory off), e.g. {ENV}=1024")
    return mib << 20


def default_limit() -> int:
    """1 GiB, or a sixteenth of physical memory when that is smaller."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return _DEFAULT_LIMIT_CAP
    return min(_DEFAULT_LIMIT_CAP, physical // 16)


def apply_default_policy() -> str:
    """Once per process, for CPU models: keep freed memory unless the user chose otherwise.

    Returns the policy now in force, in words. ConfigError for a malformed
    ``TORCH_MI_KEEP_FREED_MEMORY``.
    """
    requested = _limit_from_env()  # checked every time: a typo is reported, not ignored
    if _state.get("applied"):
        return allocator_policy()
    reason = _user_chose_allocator()
    if reason is not None:
        _state.update(applied=True, policy=f"left to the user ({reason})")
    elif requested == 0:
        _state.update(applied=True, policy=f"glibc defaults ({ENV}=0)")
    elif keep_freed_memory(default_limit() if requested is None else requested):
        _state["applied"] = True
    return allocator_policy()
