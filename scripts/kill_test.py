"""kill -9 at random points of every stage, then the same command again (issue 14).

    python scripts/kill_test.py                          # all stages, seeds 0 1 2
    python scripts/kill_test.py --stages build fetch --seeds 0 1 2 3 4

For each stage and seed a real ``foldnet`` subprocess (own process group) is started and
killed with SIGKILL after a random delay; then the same command runs to the end, and the
stage's check says whether the work done before the kill was kept and nothing half-written
was trusted:

* ``build``: ``foldnet build-dataset``; before the rerun no split file of an unfinished
  build may open (``H5Dataset`` refuses it), after it every split matches the manifest's
  sha256 and no ``.tmp`` file is left.
* ``train``: ``foldnet train debug=tiny`` checkpointing every 2 steps; the rerun must start
  at the newest checkpoint that existed at the kill and finish all steps.
* ``predict``: 6 short FASTA records with ``fold=fast``; records finished before the kill
  are kept (``resumed``, files untouched), the rest predicted.
* ``evaluate``: 3 held-out domains, baselines only, ``fold=fast``; finished domains resume.
* ``fetch``: a 3 MB file from a throttled HTTP server on 127.0.0.1; the rerun must ask for
  the rest with a Range request from the ``.part`` size and end with identical bytes.

Writes ``docs/bench/kill.json`` and ``docs/bench/kill.md``: runs, kills (the process was
still running when killed), resumes (the rerun reused work of the killed run), lost (work
finished before the kill that the rerun did again or lost), failures.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FOLDNET_DATA", str(REPO.parent / "shared" / "data")))
PY = sys.executable


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), FOLDNET_DATA=str(DATA), JAX_PLATFORMS="cpu")
    env.setdefault("FOLDNET_JAX_CACHE", str(Path(tempfile.gettempdir()) / "foldnet-kill-jit"))
    return env


def foldnet(*args: str) -> list[str]:
    return [PY, "-m", "foldnet.cli.main", *args]


def run_killed(cmd: list[str], delay: float, cwd: Path, after: Optional[Callable[[], bool]] = None,
               max_wait: float = 300.0, poll: float = 0.05) -> dict:
    """Start ``cmd``; SIGKILL its process group ``delay`` s later (counted from when ``after()``
    first holds, e.g. "a checkpoint exists", when given) unless it finished first."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    if after is not None:
        while proc.poll() is None and not after() and time.perf_counter() - t0 < max_wait:
            time.sleep(poll)
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = True
    return {"killed": killed, "at_s": round(time.perf_counter() - t0, 2)}


def run_to_end(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- stages


def stage_build(work: Path, rng: random.Random) -> dict:
    out = work / "built"
    base = ["build-dataset", "data=proteinnet_small", f"data.dir={out}", "data.build.leakage.enabled=false",
            "data.build.workers=1"]
    # An earlier, finished build of other options: a kill between two split files of the new one
    # leaves a folder mixing generations, which must not be read as a dataset.
    first = run_to_end(foldnet(*base, "data.build.max_chains=150"), work)
    if first.returncode:
        raise RuntimeError(first.stderr)
    cmd = foldnet(*base, "data.build.max_chains=300")
    if rng.random() < 0.5:  # anywhere (mostly while parsing)
        kill = run_killed(cmd, rng.uniform(0.5, 4.0), work)
    else:  # while the split files are written: the first temp file seen, then a little later
        kill = run_killed(cmd, rng.uniform(0.0, 0.3), work, after=lambda: any(out.glob(".*.tmp")), poll=0.002)
    from foldnet.data.cache import H5Dataset, StaleCacheError
    from foldnet.data.errors import ParseError

    trusted_partial = refused = 0
    manifest = out / "manifest.json"
    for h5 in sorted(out.glob("*.h5")) if out.exists() else []:
        try:
            H5Dataset(h5)
        except (StaleCacheError, ParseError, OSError):
            refused += 1
            continue
        # Opened: it must then be the file the (finished) manifest describes.
        info = json.loads(manifest.read_text())["splits"].get(h5.stem, {}) if manifest.exists() else {}
        if info.get("sha256") != _sha(h5):
            trusted_partial += 1
    tmp_before = len(list(out.glob(".*.tmp"))) if out.exists() else 0
    res = run_to_end(cmd, work)
    ok = res.returncode == 0
    m = json.loads(manifest.read_text()) if manifest.exists() else {"splits": {}}
    consistent = all(_sha(out / i["file"]) == i["sha256"] for i in m["splits"].values()) and bool(m["splits"])
    left = len(list(out.glob(".*.tmp")))
    return {**kill, "ok": ok and consistent and left == 0 and trusted_partial == 0,
            "resumed": False, "lost": 0, "tmp_files_before_rerun": tmp_before, "tmp_files_after": left, "splits_refused_before_rerun": refused,
            "half_written_trusted": trusted_partial, "stderr": res.stderr[-400:] if not ok else ""}


def _ensure_small_dataset(work: Path) -> Path:
    out = work.parent / "shared-built"
    if not (out / "manifest.json").exists():
        res = run_to_end(foldnet("build-dataset", "data=proteinnet_small", f"data.dir={out}",
                                 "data.build.leakage.enabled=false"), work)
        if res.returncode:
            raise RuntimeError(res.stderr)
    return out


def stage_train(work: Path, rng: random.Random) -> dict:
    data = _ensure_small_dataset(work)
    run = work / "run"
    cmd = foldnet("train", "debug=tiny", f"data.dir={data}", f"data.train={data / 'train.h5'}",
                  f"data.val={data / 'val.h5'}", f"run_dir={run}", "steps=16", "checkpoint.every_steps=2",
                  "checkpoint.keep_last=3", "val.every_steps=0", "logging.tensorboard=false", "logging.curves=false")
    ck = run / "checkpoints"
    kill = run_killed(cmd, rng.uniform(0.0, 3.0), work,
                      after=lambda: ck.is_dir() and any(d.name.isdigit() for d in ck.iterdir()))
    steps = sorted(int(d.name) for d in ck.iterdir() if d.name.isdigit()) if ck.exists() else []
    newest = steps[-1] if steps else 0
    res = run_to_end(cmd, work)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    start = summary.get("start_step", -1)
    ok = res.returncode == 0 and summary.get("steps_done") == 16 and (start == newest or not kill["killed"])
    return {**kill, "ok": ok, "resumed": bool(start and start > 0), "checkpoint_at_kill": newest,
            "resumed_from": start, "lost": 0 if start == newest or not kill["killed"] else 1,
            "stderr": res.stderr[-400:] if res.returncode else ""}


def _fasta(work: Path) -> Path:
    from foldnet.data.proteinnet import iter_proteinnet

    recs = [p for p in iter_proteinnet(DATA / "proteinnet" / "testing.gz") if 40 <= len(p) <= 60][:6]
    path = work / "q.fasta"
    path.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in recs))
    return path


def stage_predict(work: Path, rng: random.Random) -> dict:
    out = work / "pred"
    cmd = foldnet("predict", f"input={_fasta(work)}", f"out_dir={out}", "fold=fast", "write_png=false", "progress=false")
    kill = run_killed(cmd, rng.uniform(0.0, 4.0), work, after=lambda: any(out.glob("*.npz")))
    done = {p.stem: p.stat().st_mtime_ns for p in out.glob("*.npz")} if out.exists() else {}
    res = run_to_end(cmd, work)
    rows = [ln.split("\t") for ln in (out / "summary.tsv").read_text().splitlines()] if (out / "summary.tsv").exists() else [[]]
    head = rows[0]
    table = [dict(zip(head, r)) for r in rows[1:]]
    kept = {r["file"] for r in table if r.get("resumed") == "1"}
    untouched = all(out.joinpath(f"{s}.npz").stat().st_mtime_ns == t for s, t in done.items())
    lost = len(set(done) - kept) + (0 if untouched else 1)
    ok = res.returncode == 0 and len(table) == 6 and all(r["ok"] == "1" for r in table) and lost == 0
    left = len(list(out.glob(".*.tmp")))
    return {**kill, "ok": ok and left == 0, "resumed": bool(kept), "finished_before_rerun": len(done),
            "kept": len(kept), "lost": lost, "tmp_files_after": left, "stderr": res.stderr[-400:] if res.returncode else ""}


def stage_evaluate(work: Path, rng: random.Random) -> dict:
    out = work / "eval"
    cmd = foldnet("evaluate", f"out_dir={out}", "max_domains=3", "max_length=90", "fold=fast",
                  "methods=[prior,true_distogram]", "num_example_maps=0", "progress=false")
    kill = run_killed(cmd, rng.uniform(0.0, 4.0), work, after=lambda: any((out / "domains").glob("*.json")))
    done = {p.name for p in (out / "domains").glob("*.json")} if (out / "domains").exists() else set()
    res = run_to_end(cmd, work)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    counts = summary.get("counts", {})
    resumed = counts.get("resumed", 0)
    lost = max(0, len(done) - resumed)
    ok = res.returncode == 0 and summary.get("num_domains") == 3 and lost == 0
    return {**kill, "ok": ok, "resumed": resumed > 0, "finished_before_rerun": len(done), "kept": resumed,
            "lost": lost, "stderr": res.stderr[-400:] if res.returncode else ""}


class _Throttled(http.server.BaseHTTPRequestHandler):
    payload = b""
    ranges: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        data = self.payload
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", '"' + hashlib.md5(data).hexdigest() + '"')
        self.end_headers()
        try:
            for i in range(start, len(data), 1 << 16):
                self.wfile.write(data[i:i + (1 << 16)])
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


def serve(payload: bytes):
    handler = type("H", (_Throttled,), {"payload": payload, "ranges": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv, handler


def stage_fetch(work: Path, rng: random.Random) -> dict:
    payload = random.Random(rng.random()).randbytes(3 << 20)  # ~2.5 s at 64 KiB / 50 ms
    srv, handler = serve(payload)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/big.bin"
        cache = work / "cache"
        cmd = foldnet("fetch", "source=url", f"url={url}", f"cache_dir={cache}", "progress=false", "retries=1")
        part = cache / "url" / "big.bin.part"
        kill = run_killed(cmd, rng.uniform(0.0, 2.0), work, after=part.exists)
        had = part.stat().st_size if part.exists() else 0
        handler.ranges.clear()
        res = run_to_end(cmd, work, timeout=120)
        dest = cache / "url" / "big.bin"
        same = dest.exists() and dest.read_bytes() == payload
        resumed = had > 0 and handler.ranges[:1] == [f"bytes={had}-"]
        lost = 0 if (had == 0 or resumed or not kill["killed"]) else 1
        return {**kill, "ok": res.returncode == 0 and same and lost == 0 and not part.exists(),
                "resumed": resumed, "part_bytes_at_kill": had, "lost": lost,
                "stderr": res.stderr[-400:] if res.returncode else ""}
    finally:
        srv.shutdown()
        srv.server_close()


STAGES: dict[str, Callable[[Path, random.Random], dict]] = {
    "build": stage_build, "train": stage_train, "predict": stage_predict, "evaluate": stage_evaluate,
    "fetch": stage_fetch,
}


def run_stage(name: str, seed: int, root: Path) -> dict:
    work = root / f"{name}-{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    res = STAGES[name](work, random.Random(f"{name}:{seed}"))
    return {"stage": name, "seed": seed, "seconds": round(time.perf_counter() - t0, 1), **res}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "kill"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="foldnet-kill-") as tmp:
        for name in args.stages:
            for seed in args.seeds:
                row = run_stage(name, seed, Path(tmp) / "w")
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "stderr"}), flush=True)
    table = {}
    for r in rows:
        t = table.setdefault(r["stage"], {"runs": 0, "kills": 0, "resumes": 0, "lost": 0, "failures": 0})
        t["runs"] += 1
        t["kills"] += int(r["killed"])
        t["resumes"] += int(bool(r["resumed"]))
        t["lost"] += int(r["lost"])
        t["failures"] += int(not r["ok"])
    total = {k: sum(t[k] for t in table.values()) for k in ("runs", "kills", "resumes", "lost", "failures")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": table, "total": total, "runs": rows}, indent=1) + "\n")
    lines = ["# kill -9 at random points, then the same command again (issue 14)", "",
             f"`python scripts/kill_test.py --stages {' '.join(args.stages)} --seeds {' '.join(map(str, args.seeds))}` "
             "(what each stage checks: the script's docstring; every run in `kill.json`).", "",
             "| stage | runs | kills | resumes | lost | failures |", "|---|---:|---:|---:|---:|---:|"]
    for name, t in table.items():
        lines.append(f"| {name} | {t['runs']} | {t['kills']} | {t['resumes']} | {t['lost']} | {t['failures']} |")
    lines.append(f"| **total** | **{total['runs']}** | **{total['kills']}** | **{total['resumes']}** | "
                 f"**{total['lost']}** | **{total['failures']}** |")
    lines += ["", "A run counts as a kill when the process was still running at the random moment; a resume when "
              "the rerun reused work of the killed run (checkpoint, finished records / domains, partial download). "
              "Builds have nothing to resume by design: a killed build's files are never trusted and the rerun "
              "builds again."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if total["failures"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
