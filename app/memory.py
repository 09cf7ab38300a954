"""Bounded server memory for many visitors.

Gradio keeps every session's ``gr.State`` for its time to live (two hours here), and an API client
never closes its page, so sessions pile up: each holds an image, a label, results and caches. Three
measures keep the server's memory bounded (``tests/test_memory.py`` checks it over 100 sessions):

* :class:`SessionPool`: the sessions holding an image, least recently used first. Past a byte budget
  (``SEQPATCH_SESSION_MEMORY_MB``, default 768) or a count (``SEQPATCH_MAX_SESSIONS``, default 16), the
  least recently used ones release their arrays; their next action says so in one line. The pool
  holds weak references only: per-user state stays in ``gr.State``.
* :func:`shared_volume`: sessions that open the same file (the examples, mostly) share one read-only
  copy of its voxels.
* Gradio's own per-session store (each session's page state and updated components) is capped at
  :data:`GRADIO_SESSIONS` (``state_session_capacity``; Gradio's default keeps 10,000).
* :func:`trim`: after a session's arrays are freed, glibc is asked to give the freed heap back to
  the system (``malloc_trim``); without it the resident size stays at its high-water mark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seqpatch_core.base.lru import LRU
from seqpatch_core.images import io
from seqpatch_core.images.volume import Volume

log = logging.getLogger(__name__)

#: Sessions whose page state Gradio keeps (the oldest beyond are forgotten: their next click asks
#: for an image again).
GRADIO_SESSIONS = 200

RELEASED = (
    "this session was idle and its image was released to free the server's memory: "
    "load the image again (exports made before are still in your downloads)"
)


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def nbytes(obj: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """The bytes of the numpy arrays reachable from ``obj`` through dataclass fields, dicts, lists
    and tuples (each array counted once): what a session costs, give or take small Python objects."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        base = obj if obj.base is None else obj.base
        if isinstance(base, np.ndarray) and id(base) not in seen:
            seen.add(id(base))
            return int(base.nbytes)
        return 0 if base is not obj else int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(nbytes(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(nbytes(v, seen, depth + 1) for v in obj)
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields:
        return sum(nbytes(getattr(obj, f, None), seen, depth + 1) for f in fields)
    return 0


class SessionPool:
    """The sessions that hold arrays, least recently used first (weak references).

    ``touch(session)`` marks one as used now and, past the budget, calls ``release()`` on the least
    recently used others, but for those whose ``busy`` attribute is non-zero (a run in progress).
    ``size`` tells what a session costs in bytes (default :func:`nbytes`).
    """

    def __init__(
        self,
        max_bytes: int | None = None,
        max_sessions: int | None = None,
        size: Callable[[Any], int] | None = None,
    ):
        self.max_bytes = max_bytes or _env_int("SEQPATCH_SESSION_MEMORY_MB", 768) * 2**20
        self.max_sessions = max_sessions or _env_int("SEQPATCH_MAX_SESSIONS", 16)
        self._size = size or nbytes
        self._live: OrderedDict[int, weakref.ref] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._live)

    def _prune(self) -> None:
        for key in [k for k, ref in self._live.items() if ref() is None]:
            del self._live[key]

    def touch(self, session: Any) -> list[Any]:
        """``session`` was just used; releases the least recently used others past the budget and
        returns them."""
        with self._lock:
            self._prune()
            key = id(session)
            self._live[key] = weakref.ref(session)
            self._live.move_to_end(key)
            sessions = [ref() for ref in self._live.values()]
            sizes = [self._size(s) for s in sessions]
            total = sum(sizes)
            released = []
            for s, b in zip(sessions[:-1], sizes[:-1], strict=True):  # never the one in use now
                if total <= self.max_bytes and len(self._live) <= self.max_sessions:
                    break
                if getattr(s, "busy", 0):  # a long run (a grid, a 3D object) still needs its arrays
                    continue
                del self._live[id(s)]
                total -= b
                released.append(s)
        for s in released:
            log.info("released an idle session's arrays (%.0f MB in use by the others)", total / 2**20)
            s.release()
        if released:
            trim()
        return released

    def forget(self, session: Any) -> None:
        with self._lock:
            self._live.pop(id(session), None)


#: The server's pool (one per process, like the models: it holds no user data, only weak references).
POOL = SessionPool()


# ----------------------------------------------------------------------------- shared read-only volumes

_SHARED = LRU(4)  # (real path, size, mtime) -> Volume with a read-only array


def shared_volume(path: str | Path) -> Volume:
    """:func:`~seqpatch_core.images.io.read_volume`, with one read-only copy of the voxels for every session
    that opens the same file (same real path, size and modification time): the examples, mostly.

    The array is made read-only, so a caller that tried to change it in place would fail loudly
    rather than change another visitor's image. Each caller gets its own :class:`Volume` (its own
    warnings list), sharing the array.
    """
    p = Path(path)
    st = p.stat() if p.is_file() else None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns) if st else None
    hit = _SHARED.get(key) if key else None
    if hit is None:
        hit = io.read_volume(p)
        hit.array.setflags(write=False)
        if key:
            _SHARED.put(key, hit)
    return Volume(
        hit.array, hit.spacing, hit.origin, hit.direction, hit.modality, hit.source, list(hit.warnings),
        dicom=hit.dicom,  # the DICOM source instances, read-only too: what the export's DICOM SEG references
    )


def is_shared(array: np.ndarray) -> bool:
    """Whether ``array`` is one of the shared read-only copies (not counted against one session)."""
    return any(v.array is array for v in _SHARED.values())


# ----------------------------------------------------------------------------- malloc_trim

_LIBC: Any = None


def trim() -> bool:
    """Ask glibc to return freed heap memory to the system; False where there is no glibc."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if not _LIBC or not hasattr(_LIBC, "malloc_trim"):
        return False
    return bool(_LIBC.malloc_trim(0))
