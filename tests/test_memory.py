"""Server memory stays bounded however many visitors come (:mod:`app.memory`).

The long test drives 100 sessions through the HTTP API, as API clients do (they never close a page,
so Gradio keeps their state for its whole time to live): load an example with its label, click,
export. The server's resident memory after 100 sessions must stay within 300 MB of its level after 5.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import numpy as np
import pytest
from helpers import example, free_port

from app import handlers, memory
from app.notices import UserNotice

EXAMPLE = tuple(str(p) for p in example("lung2_ct_crop"))


@dataclass
class Fake:
    """A session stand-in: ``arr`` is what it holds, ``release`` lets go of it."""

    arr: np.ndarray | None
    released: list = field(default_factory=list)

    def release(self) -> None:
        self.released.append(True)
        self.arr = None


@pytest.mark.parametrize(
    "max_mb,max_n,expect_live",
    [(10, 100, 2), (100, 3, 3), (100, 100, 6)],
    ids=["bytes", "count", "room-for-all"],
)
def test_the_pool_lets_the_least_recently_used_go(max_mb, max_n, expect_live):
    pool = memory.SessionPool(max_bytes=max_mb * 2**20, max_sessions=max_n)
    sessions = [Fake(np.zeros(4 * 2**20, np.uint8)) for _ in range(6)]  # 4 MB each
    for s in sessions:
        pool.touch(s)
    pool.touch(sessions[-2])  # used again: now the most recent
    live = [s for s in sessions if s.arr is not None]
    assert len(live) == expect_live == len(pool)
    assert sessions[-2].arr is not None and sessions[-1].arr is not None  # the recent ones stay
    if expect_live < 6:
        assert sessions[0].released == [True]  # the least recently used went first


def test_the_pool_holds_weak_references():
    pool = memory.SessionPool(max_bytes=2**30, max_sessions=10)
    s = Fake(np.zeros(10, np.uint8))
    pool.touch(s)
    assert len(pool) == 1
    del s
    gc.collect()
    assert len(pool) == 0


def test_a_file_opened_twice_is_one_read_only_array():
    a = memory.shared_volume(EXAMPLE[0])
    b = memory.shared_volume(EXAMPLE[0])
    assert a is not b and a.array is b.array and memory.is_shared(a.array)
    assert not a.array.flags.writeable
    a.warnings.append("mine")
    assert "mine" not in b.warnings


@pytest.mark.slow
def test_a_released_session_says_so_in_one_line(small_models):
    from seqpatch_core.inference.predictor import Predictor

    s = handlers.load(Predictor(dict(small_models), device="cpu"), None, *EXAMPLE)["state"]
    handlers.segment(s, 10, 125.0, 126.0)
    assert s.memory_bytes() > 0
    s.release()
    assert s.volume is None and s.results == {} and s.predictor.volume is None
    with pytest.raises(UserNotice, match="released to free the server's memory"):
        handlers.change_slice(s, 3)
    s.close()


@pytest.mark.slow
def test_memory_is_bounded_over_100_sessions(small_models, one_thread):
    """Fails without the pool: each session keeps its image, label, results and caches for 2 h."""
    import psutil
    from gradio_client import Client, handle_file

    from app import LAUNCH_KWARGS, build_demo
    from seqpatch_core.inference.predictor import Predictor

    demo = build_demo(Predictor(dict(small_models), device="cpu"), examples=[])
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS)
    proc = psutil.Process()
    rss = {}
    try:
        for i in range(1, 101):
            c = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False, analytics_enabled=False)
            c.predict(handle_file(EXAMPLE[0]), handle_file(EXAMPLE[1]), "auto", 0.5, 0.3, False, True, api_name="/load")
            c.predict(10, 125.0, 126.0, api_name="/segment")
            c.predict(api_name="/export")
            c.close()
            if i in (5, 50, 100):
                gc.collect()
                memory.trim()
                rss[i] = proc.memory_info().rss / 2**20
    finally:
        demo.close()
    print(f"server RSS (MB) after 5, 50, 100 sessions: {rss[5]:.0f}, {rss[50]:.0f}, {rss[100]:.0f}")
    assert len(memory.POOL) <= memory.POOL.max_sessions
    assert rss[100] - rss[5] <= 300, rss


def test_a_busy_session_is_left_alone():
    pool = memory.SessionPool(max_bytes=2**30, max_sessions=1)
    a, b = Fake(np.zeros(10, np.uint8)), Fake(np.zeros(10, np.uint8))
    a.busy = 1  # a long run in progress
    pool.touch(a)
    pool.touch(b)
    assert a.arr is not None and a.released == []
    a.busy = 0
    pool.touch(b)
    assert a.released == [True]
