"""Benchmark the structure module on CPU: NeRF, folding time, true-distogram recovery.

Sections (each written to the JSON as soon as it is done):
  nerf      - round trip coordinates -> internal coordinates -> NeRF on real chains
              (true and ideal geometry), and scan vs pNeRF time (value+grad, vmapped).
  length    - fold() time vs chain length at a fixed number of restarts
              (first call = compile + run, second call = run; compile = difference).
  restarts  - fold() time vs number of restarts at a fixed length.
  devices   - fold() time of one length with the restarts on one device vs split across
              all CPU devices (one per core, ``use_all_cpu_cores``).
  recovery  - fold the first N chains of 50-300 residues of ProteinNet testing.gz from
              their TRUE (smoothed) distogram and phi/psi distributions; TM-score to the
              native (and to its mirror image), fraction with TM >= 0.8.

Usage:
  python scripts/bench_fold.py [--data-root DIR] [--out docs/bench] [--config default]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# The benchmark is specified on CPU; set JAX_PLATFORMS=gpu (etc.) explicitly to time an accelerator.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from foldnet.common import atomic, paths  # noqa: E402
from foldnet.data.proteinnet import iter_proteinnet  # noqa: E402
from foldnet.geometry import build_backbone, internal_coordinates  # noqa: E402
from foldnet.structure import FoldConfig, fold, true_distributions  # noqa: E402
from foldnet.metrics import rmsd, tm_score  # noqa: E402
from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores  # noqa: E402
from foldnet.structure.fold import restart_mesh  # noqa: E402

retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
use_all_cpu_cores()  # as the CLIs do: one CPU device per core


def load_config(name: str) -> FoldConfig:
    """Compose configs/fold/<name>.yaml (its ``defaults`` list included) into a FoldConfig."""
    def load(n):
        node = OmegaConf.load(REPO / "configs" / "fold" / f"{n}.yaml")
        defaults = node.pop("defaults", [])
        merged = OmegaConf.create()
        for d in defaults:
            merged = OmegaConf.merge(merged, load(d) if d != "_self_" else node)
        return merged if defaults else node
    return FoldConfig.from_dict(OmegaConf.to_container(load(name)))


def chains(data_root: Path, lo: int, hi: int, n: int):
    out = []
    for p in iter_proteinnet(data_root / "proteinnet" / "testing.gz"):
        if lo <= len(p) <= hi:
            out.append(p)
            if len(out) == n:
                break
    return out


@jax.jit
def _rebuilds(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """NeRF rebuilds [Lp*3, 3] (true, ideal geometry) of a backbone [Lp, 3, 3]."""
    t, bl, ba, _ = internal_coordinates(x[:, 0], x[:, 1], x[:, 2])
    return build_backbone(t, bl, ba)[:, :3].reshape(-1, 3), build_backbone(t)[:, :3].reshape(-1, 3)


def _round_trip(x: jnp.ndarray, mask: jnp.ndarray) -> tuple[float, float]:
    """RMSD of NeRF rebuilds (true, ideal geometry) of a chain padded at its C-terminus.

    The rebuild is jitted; the RMSD is ``foldnet.metrics``' numpy Kabsch (float64).
    """
    true_x, ideal_x = (np.asarray(a) for a in _rebuilds(x))
    m = np.repeat(np.asarray(mask), 3)
    native = np.asarray(x)[:, :3].reshape(-1, 3)
    return rmsd(true_x, native, m), rmsd(ideal_x, native, m)


def _padded(p, bucket: int = 64) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Backbone [Lp, 3, 3] padded with an ideal extended tail (NeRF is N->C: exact)."""
    L = len(p)
    Lp = -(-L // bucket) * bucket
    x = p.atom_positions[:, :3]
    if Lp > L:
        tail = np.asarray(build_backbone(jnp.tile(jnp.deg2rad(jnp.array([-120.0, 130.0, 180.0])), (Lp - L + 1, 1))))[:, :3]
        # Continue the chain roughly where it ends; the values do not matter (masked out).
        x = np.concatenate([x, tail[1:] - tail[0] + x[-1, 2] + 1.5])
    mask = np.arange(Lp) < L
    return jnp.asarray(x, jnp.float32), jnp.asarray(mask, jnp.float32)


def bench_nerf(data_root: Path) -> dict:
    prots = chains(data_root, 50, 400, 30)
    true_r, ideal_r = [], []
    for p in prots:
        a, b = _round_trip(*_padded(p))
        true_r.append(float(a))
        ideal_r.append(float(b))
    lengths = [len(p) for p in prots]
    timing = {}
    for method in ("scan", "pnerf", "frames"):
        for L in (100, 300):
            tors = jax.random.normal(jax.random.PRNGKey(0), (8, L, 3))
            f = jax.jit(jax.vmap(jax.grad(lambda t: jnp.sum(build_backbone(t, method=method)[:, 4] ** 2))))
            f(tors).block_until_ready()
            t0 = time.perf_counter()
            for _ in range(20):
                f(tors).block_until_ready()
            timing[f"{method}_L{L}_R8_ms"] = (time.perf_counter() - t0) / 20 * 1e3
    return {
        "chains": len(prots),
        "length_range": [min(lengths), max(lengths)],
        "rmsd_true_geometry_max": max(true_r),
        "rmsd_true_geometry_mean": float(np.mean(true_r)),
        "rmsd_ideal_geometry_mean": float(np.mean(ideal_r)),
        "rmsd_ideal_geometry_median": float(np.median(ideal_r)),
        "rmsd_ideal_geometry_by_chain": [(p.id, len(p), r) for p, r in zip(prots, ideal_r)],
        "grad_time_ms": timing,
    }


def time_fold(protein, config: FoldConfig) -> dict:
    d, ph, ps = true_distributions(protein)
    t0 = time.perf_counter()
    fold(d, ph, ps, config, seed=0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fold(d, ph, ps, config, seed=1)
    second = time.perf_counter() - t0
    mesh = restart_mesh(config.num_restarts) if config.shard_restarts else None
    return {"length": len(protein), "restarts": config.num_restarts, "steps": config.num_steps,
            "devices": 1 if mesh is None else int(mesh.devices.size),
            "first_call_s": first, "run_s": second, "compile_s": max(first - second, 0.0)}


def crop_to(data_root: Path, length: int):
    for p in iter_proteinnet(data_root / "proteinnet" / "testing.gz"):
        if len(p) >= length:
            return p.select(np.arange(length), id=f"{p.id}[:{length}]")
    raise RuntimeError(f"no chain of >= {length} residues")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=str(REPO / "docs" / "bench"))
    ap.add_argument("--config", default="default")
    ap.add_argument("--lengths", default="50,100,200,300,400")
    ap.add_argument("--restarts", default="1,4,8,16")
    ap.add_argument("--restarts-length", type=int, default=100)
    ap.add_argument("--num-chains", type=int, default=30)
    ap.add_argument("--devices-length", type=int, default=300)
    ap.add_argument("--sections", default="nerf,length,restarts,devices,recovery")
    args = ap.parse_args(argv)
    data_root = paths.data_root(args.data_root)
    config = load_config(args.config)
    out = Path(args.out)
    sections = args.sections.split(",")
    # Sections not run this time keep their previous results (runs can be split up).
    previous = json.loads((out / "fold.json").read_text()) if (out / "fold.json").exists() else {}
    result = {k: v for k, v in previous.items() if k in ("nerf", "length", "restarts", "devices", "recovery")}
    result |= {
        "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, "
                   f"jax {jax.__version__} {jax.default_backend()} with {jax.local_device_count()} devices",
        "load_average_start": os.getloadavg(),
        "config": config.__dict__,
    }

    def save():
        atomic.write_text(out / "fold.json", json.dumps(result, indent=1, default=float))
        md = markdown(result)
        atomic.write_text(out / "fold.md", md)
        return md

    if "nerf" in sections:
        result["nerf"] = bench_nerf(data_root)
        save()
    if "length" in sections:
        result["length"] = []
        for L in (int(x) for x in args.lengths.split(",")):
            result["length"].append(time_fold(crop_to(data_root, L), config))
            print(result["length"][-1], flush=True)
            save()
    if "restarts" in sections:
        result["restarts"] = []
        p = crop_to(data_root, args.restarts_length)
        for r in (int(x) for x in args.restarts.split(",")):
            result["restarts"].append(time_fold(p, config.replace(num_restarts=r)))
            print(result["restarts"][-1], flush=True)
            save()
    if "devices" in sections:
        result["devices"] = []
        p = crop_to(data_root, args.devices_length)
        for shard in (False, True):
            result["devices"].append(time_fold(p, config.replace(shard_restarts=shard)))
            print(result["devices"][-1], flush=True)
            save()
    if "recovery" in sections:
        rows = []
        result["recovery"] = {"rows": rows}
        for p in chains(data_root, 50, 300, args.num_chains):
            d, ph, ps = true_distributions(p)
            t0 = time.perf_counter()
            r = fold(d, ph, ps, config, seed=0, aatype=p.aatype)
            dt = time.perf_counter() - t0
            pred = r.protein.atom_positions[:, 1]
            nat = p.atom_positions[:, 1]
            rows.append({
                "id": p.id, "length": len(p), "tm": tm_score(pred, nat),
                "tm_mirror": tm_score(pred * np.array([1.0, 1.0, -1.0]), nat),
                "ca_rmsd": float(rmsd(jnp.asarray(pred), jnp.asarray(nat))),
                "energy": r.energy, "confidence": r.summary_confidence, "time_s": dt,
            })
            print(rows[-1], flush=True)
            tms = np.array([x["tm"] for x in rows])
            result["recovery"].update(
                chains=len(rows), tm_mean=float(tms.mean()), tm_median=float(np.median(tms)),
                frac_tm_ge_0_8=float(np.mean(tms >= 0.8)),
                mirror_wins=int(sum(x["tm_mirror"] > x["tm"] for x in rows)),
            )
            save()
    result["load_average_end"] = os.getloadavg()
    print(save())
    return 0


def markdown(res: dict) -> str:
    lines = [f"# Folding benchmark\n\nMachine: {res['machine']}; load average at start "
             f"{tuple(round(x, 1) for x in res['load_average_start'])}.\n"]
    if "nerf" in res:
        n = res["nerf"]
        lines += [
            "## NeRF round trip (coordinates -> torsions/bonds/angles -> coordinates)\n",
            f"{n['chains']} ProteinNet test chains, {n['length_range'][0]}-{n['length_range'][1]} residues, "
            "RMSD over N/CA/C after Kabsch:\n",
            "| geometry | mean RMSD (A) | other |", "|---|---|---|",
            f"| true bond lengths + angles | {n['rmsd_true_geometry_mean']:.5f} | max {n['rmsd_true_geometry_max']:.5f} |",
            f"| ideal Engh & Huber | {n['rmsd_ideal_geometry_mean']:.2f} | median {n['rmsd_ideal_geometry_median']:.2f} |",
            "", "| builder, value+grad vmapped over 8 chains | ms |", "|---|---|",
        ]
        lines += [f"| {k} | {v:.2f} |" for k, v in n["grad_time_ms"].items()]
        lines.append("")
    for key, title in (("length", "Fold time vs length"), ("restarts", "Fold time vs restarts"),
                       ("devices", "Restarts on one device vs split across the CPU devices")):
        if res.get(key):
            lines += [f"## {title}\n", "| L | restarts | steps | devices | compile (s) | run (s) |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['length']} | {r['restarts']} | {r['steps']} | {r.get('devices', 1)} | {r['compile_s']:.1f} | "
                      f"{r['run_s']:.1f} |" for r in res[key]]
            lines.append("")
    if res.get("recovery", {}).get("rows"):
        rc_ = res["recovery"]
        lines += [
            "## Recovery from the true distogram (sigma 1 A) and true phi/psi (sigma 10 deg)\n",
            f"{rc_['chains']} chains: mean TM {rc_['tm_mean']:.3f}, median {rc_['tm_median']:.3f}, "
            f"fraction TM >= 0.8: {rc_['frac_tm_ge_0_8']:.2f}; mirror image scored higher in {rc_['mirror_wins']}.\n",
            "| chain | L | TM | TM mirror | CA RMSD (A) | confidence | time incl. compile of a new length bucket (s) |", "|---|---|---|---|---|---|---|",
        ]
        lines += [f"| {r['id']} | {r['length']} | {r['tm']:.3f} | {r['tm_mirror']:.3f} | {r['ca_rmsd']:.2f} | "
                  f"{r['confidence']:.1f} | {r['time_s']:.1f} |" for r in rc_["rows"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
