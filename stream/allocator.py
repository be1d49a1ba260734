"""Keep numpy's large temporaries in the heap instead of a fresh mmap per array.

glibc serves allocations above its mmap threshold (128 kB, raised dynamically up to the
largest block freed so far) with a fresh ``mmap``, returns them with ``munmap`` on free and
trims the heap top back to the OS past 128 kB: every numpy call on a few MB of pairs or
samples then page-faults its result in again. The engine's working set is such arrays
(per tick: candidate pairs x samples, the fleet's sample arrays), so the kernel's page
faulting took ~30% of a 5,000-vehicle assessment and ~35% at 100,000 (bench_risk_ticks,
bench_scaling). Raising the thresholds keeps those pages in the process for reuse; the peak
resident memory is unchanged (the same arrays exist at the peak either way), only not handed
back between ticks.

Process-wide and idempotent; a no-op where the C library has no ``mallopt`` (not glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit: larger blocks are still mmap'ed
TRIM_THRESHOLD = 128 << 20  # free heap top kept up to this before it is returned
TOP_PAD = 16 << 20  # heap grown in steps of this (fewer brk calls)
_done = False


def keep_temporaries_in_heap() -> bool:
    """Set the allocator thresholds once per process; True when they are in effect."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _done = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD)))
    return _done
