"""Load test of the real demo server (loopback only): concurrent sessions, no cross-talk, bounded memory.

The server is ``build_demo(...).launch(...)`` in this process with tiny random-weight networks; the
sessions are ``gradio_client.Client`` instances driven from threads, each with its own volume (the
object somewhere else), its own threshold and its own clicks. Every session must export exactly the
masks a direct :class:`~seqpatch_core.inference.predictor.Predictor` call gives on its volume and clicks.
Then 50 more sessions run; the process memory must stay bounded and every session state must be
dropped (and its files removed) once it expires.

Run with ``pytest -s`` to see the measured throughput (clicks per second) and memory figures.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import numpy as np
import psutil
import pytest
import SimpleITK as sitk
from helpers import free_port

import app.session
from app import LAUNCH_KWARGS, build_demo, outputs
from app.session import Session
from seqpatch_core.images.io import read_volume
from seqpatch_core.inference.predictor import Predictor

SHAPE = (3, 48, 48)  # (z, y, x); 1 mm in-plane, so the CT working grid is the slice grid
METHODS = ("seqpatch", "unet")
N_CONCURRENT = 8
N_MORE = 50
BATCH = 4  # sessions at a time in the 50-session phase
CLICK_EVERY = 10  # in that phase every 10th session also clicks (a click costs ~0.5-1 s on 2 shared cores)
TTL_S = 5.0  # session time-to-live during the 50-session phase (the app's default is 2 h)
RSS_BOUND_MB = 400
PHASE_TIMEOUT_S = 120  # hard bound on any one phase (the whole file takes ~30 s)
# Names of the API outputs: the app's OUTPUTS without the (hidden) state.
API_OUTPUTS = [n for n in outputs.MAIN if n != "state"]


def _out(values, name: str):
    return values[API_OUTPUTS.index(name)]


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def predictor(small_models) -> Predictor:
    return Predictor(dict(small_models), device="cpu")


def _disc_volume(path: Path, centre_yx: tuple[float, float], radius: float, seed: int) -> None:
    """A CT-like volume: air, a body, and a bright disc at ``centre_yx`` on every slice."""
    rng = np.random.default_rng(seed)
    z, y, x = SHAPE
    yy, xx = np.mgrid[:y, :x]
    r2 = (yy - centre_yx[0]) ** 2 + (xx - centre_yx[1]) ** 2
    arr = np.full(SHAPE, -950.0, dtype=np.float32)
    for k in range(z):
        arr[k][r2 <= (radius + 10) ** 2] = 40.0
        arr[k][r2 <= (radius - k) ** 2] = 220.0
    arr += rng.normal(0, 15, SHAPE).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.5))
    img.SetOrigin((-10.0 * seed, 5.0, 3.0 * seed))
    sitk.WriteImage(img, str(path))


def _case(i: int, folder: Path) -> dict:
    """Session ``i``: its own file, object position, threshold and clicks (z, y, x)."""
    rng = np.random.default_rng(100 + i)
    cy, cx = (float(v) for v in rng.uniform(14, 34, size=2))
    path = folder / f"case{i:02d}.nii.gz"
    _disc_volume(path, (cy, cx), radius=float(rng.uniform(6, 9)), seed=i)
    click = (i % SHAPE[0], round(cy + rng.uniform(-2, 2), 3), round(cx + rng.uniform(-2, 2), 3))
    return {"path": path, "clicks": [click], "threshold": None}


def _expected(predictor: Predictor, case: dict) -> dict[int, dict[str, np.ndarray]]:
    """What one session alone gives: a direct Predictor call per click (slice z -> method -> mask).

    Also picks the session's threshold: the median SeqPatch likelihood at its first click, so that
    even a random-weight network gives a mask that depends on the volume and the click.
    """
    from seqpatch_core.images.intensity import auto_window

    p = predictor.session()
    vol = read_volume(case["path"])
    p.set_volume(vol)
    # the app's window: "auto" chosen once per volume, on the slice it opens at (no label: the middle)
    window = auto_window(vol, z=vol.shape[0] // 2)
    out: dict[int, dict[str, np.ndarray]] = {}
    for z, y, x in case["clicks"]:
        res = {m: p.predict((z, y, x), method=m, window=window) for m in METHODS}
        if case["threshold"] is None:
            r = res["seqpatch"]
            thr = float(np.median(r.likelihood[r.coverage > 0]))
            case["threshold"] = float(np.clip(round(thr, 4), 0.06, 0.94))
        out[z] = {m: r.rethreshold(case["threshold"]) for m, r in res.items()}
    return out


def _states(demo: gr.Blocks) -> list[gr.State]:
    return [b for b in demo.blocks.values() if isinstance(b, gr.State)]


def _live_sessions(demo: gr.Blocks) -> list[Session]:
    """The Session objects the server holds right now (over every browser/client session)."""
    for _ in range(5):  # the server thread may change the dicts while we read them
        try:
            return [
                v
                for sd in list(demo.state_holder.session_data.values())
                for v in list(sd.state_data.values())
                if isinstance(v, Session)
            ]
        except RuntimeError:
            time.sleep(0.05)
    raise AssertionError("could not read the server's session states")


@pytest.fixture(scope="module")
def server(predictor):
    # Gradio keeps the state of a session whose client went away (tab closed, heartbeat lost) for
    # 3600 s whatever the State's time_to_live; its own test switch makes that 1 s (and the
    # heartbeat 0.25 s). Sessions still open expire after their time_to_live, as in production.
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_IS_E2E_TEST", "1")
    # The small random networks rarely find an edge, and the page empties an answer that finds none
    # (app.evidence, tested on its own); here every session must keep a mask of its own, so that a
    # swap between sessions shows.
    mp.setattr(app.session, "no_object_reason", lambda *a, **k: None)
    demo = build_demo(predictor, examples=[])
    closed: list[int] = []
    for st in _states(demo):  # count the app's delete callback (close_session) calls
        real = st.delete_callback

        def counted(value, _real=real):
            closed.append(1)
            _real(value)

        st.delete_callback = counted
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS
    )
    try:
        yield {"demo": demo, "url": f"http://127.0.0.1:{port}/", "closed": closed}
    finally:
        demo.close()
        mp.undo()


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def _file_path(value) -> Path:
    """A file output as the client returns it without downloading: the server's cached file."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("value")
    return Path(str(value))


def _run_session(client, case: dict, barrier: threading.Barrier | None = None, export: bool = True) -> dict:
    from gradio_client import handle_file

    rec: dict = {}
    out = client.predict(
        handle_file(str(case["path"])), None, "auto", case["threshold"], 0.3, False, api_name="/load"
    )
    rec["summary"] = _out(out, "summary")
    if barrier is not None:
        barrier.wait(timeout=PHASE_TIMEOUT_S)
    rec["t0"] = time.perf_counter()
    for z, y, x in case["clicks"]:
        out = client.predict(z, y, x, api_name="/segment")
        rec["status"] = _out(out, "status")
    rec["t1"] = time.perf_counter()
    if export:
        files = client.predict(api_name="/export")[-1]
        rec["files"] = [_file_path(f) for f in files]
        rec["masks"] = {
            m: sitk.GetArrayFromImage(sitk.ReadImage(str(next(f for f in rec["files"] if f.name.endswith(
                f"_{m}_mask.nii.gz"))))) for m in METHODS
        }
    return rec


def test_concurrent_sessions_no_crosstalk_then_memory_bounded(server, predictor, tmp_path):
    demo, url = server["demo"], server["url"]
    cases = [_case(i, tmp_path) for i in range(N_CONCURRENT)]
    expected = [_expected(predictor, c) for c in cases]
    # The check can see a swap: the sessions' own masks differ from one another.
    firsts = [e[c["clicks"][0][0]]["unet"] for c, e in zip(cases, expected, strict=True)]
    assert len({m.tobytes() for m in firsts}) > N_CONCURRENT // 2

    for st in _states(demo):  # phase 1: long enough not to expire mid-phase on a slow machine
        st.time_to_live = 600
    clients = [_client(url) for _ in range(N_CONCURRENT)]
    barrier = threading.Barrier(N_CONCURRENT)
    with ThreadPoolExecutor(N_CONCURRENT) as pool:
        futures = [pool.submit(_run_session, cl, c, barrier) for cl, c in zip(clients, cases, strict=True)]
        recs = [f.result(timeout=PHASE_TIMEOUT_S) for f in futures]
    n_clicks = sum(len(c["clicks"]) for c in cases)
    wall = max(r["t1"] for r in recs) - min(r["t0"] for r in recs)
    print(
        f"\n[load] {N_CONCURRENT} concurrent sessions: {n_clicks} clicks (both networks each) in {wall:.2f} s "
        f"= {n_clicks / wall:.2f} clicks/s (queue concurrency 2, torch 1 thread, CPU)"
    )

    for case, exp, rec in zip(cases, expected, recs, strict=True):
        assert case["path"].name in rec["summary"]
        for m in METHODS:
            got = rec["masks"][m]
            assert got.shape == SHAPE and got.dtype == np.uint8
            for z in range(SHAPE[0]):
                want = exp[z][m] if z in exp else np.zeros(SHAPE[1:], bool)
                assert np.array_equal(got[z], want.astype(np.uint8)), (case["path"].name, m, z)
    # Server side: one Session per client, each with its own predictor and export folder.
    live = _live_sessions(demo)
    assert len(live) == N_CONCURRENT
    assert len({id(s.predictor) for s in live}) == N_CONCURRENT
    assert len({s.tmpdir for s in live}) == N_CONCURRENT and all(Path(s.tmpdir).is_dir() for s in live)
    assert sorted(Path(s.image_path).name for s in live) == sorted(c["path"].name for c in cases)
    export_dirs = [Path(s.tmpdir) for s in live]
    refs = [weakref.ref(s) for s in live]
    del live

    # Phase 2: 50 more sessions with a short time-to-live. The phase-1 sessions take it too: one cheap
    # call each (a re-threshold, no network run) stores their state again with the new TTL.
    for st in _states(demo):
        st.time_to_live = TTL_S
    with ThreadPoolExecutor(N_CONCURRENT) as pool:
        list(pool.map(lambda ic: ic[0].predict(ic[1]["threshold"], api_name="/threshold"),
                      zip(clients, cases, strict=True), timeout=PHASE_TIMEOUT_S))

    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    more = [_case(N_CONCURRENT + i, tmp_path) for i in range(N_MORE)]
    for i, c in enumerate(more):
        c["threshold"] = 0.5
        if i % CLICK_EVERY:  # every session loads its volume; every CLICK_EVERY-th one also clicks
            c["clicks"] = []
    peak_live = 0
    t_start = time.monotonic()
    with ThreadPoolExecutor(BATCH) as pool:
        workers = [_client(url) for _ in range(BATCH)]
        for b in range(0, N_MORE, BATCH):
            assert time.monotonic() - t_start < PHASE_TIMEOUT_S, "the 50-session phase is too slow"

            def one(j, b=b):
                cl = workers[j]
                cl.reset_session()  # a new browser session
                return _run_session(cl, more[b + j], export=(b + j) % (2 * CLICK_EVERY) == 0)

            list(pool.map(one, range(min(BATCH, N_MORE - b)), timeout=PHASE_TIMEOUT_S))
            live = _live_sessions(demo)
            peak_live = max(peak_live, len(live))
            export_dirs.extend(Path(s.tmpdir) for s in live if s.tmpdir)
            refs.extend(weakref.ref(s) for s in live)
            del live
        for cl in workers:  # the last sessions' "tabs" close
            cl.close()
    gc.collect()
    rss1 = proc.memory_info().rss
    t_run = time.monotonic() - t_start
    grow_mb = (rss1 - rss0) / 2**20
    n_refs = len({id(r) for r in refs})
    print(
        f"[load] {N_MORE} more sessions ({N_MORE // CLICK_EVERY} with a click) in {t_run:.1f} s: "
        f"RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MB (+{grow_mb:.0f} MB), "
        f"at most {peak_live} live session states"
    )
    assert grow_mb < RSS_BOUND_MB
    assert n_refs >= N_CONCURRENT + N_MORE // 2

    assert peak_live < N_CONCURRENT + N_MORE // 2  # states expired during the run

    # Every state expires: the phase-1 ones TTL_S after their last use (their clients are still
    # connected), the phase-2 ones once their client moved on. The server drops them, the app's
    # delete callback runs (removing the session's export folder) and nothing keeps a Session alive.
    deadline = time.monotonic() + TTL_S + 10
    while _live_sessions(demo) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _live_sessions(demo) == []
    assert len(server["closed"]) >= N_CONCURRENT + N_MORE
    assert export_dirs and not [d for d in export_dirs if d.exists()]
    for cl in clients:
        cl.close()
    gc.collect()
    alive = sum(r() is not None for r in refs)
    print(f"[load] after expiry: 0 live states, {len(server['closed'])} closed, {alive} Session objects alive")
    assert alive == 0
