"""Folding ablation on the validation split: which fold settings turn the same predictions
into better structures?

The network runs once per chain (profile mode, or with ``--single`` the profile withheld as
for a FASTA file; the shipped model or a run); its
distributions and the prior's background are cached in an .npz file. Every variant then
folds those same inputs with ``foldnet.structure.fold``'s own pieces (potential, sampling,
descent) and keeps every restart, so the table can say both what the lowest-energy pick
scores (what ``fold`` returns) and what the best of the restarts would have scored (is the
limit the search, the pick, or the potential?), and what other picks would score: the
restart that agrees best (lDDT-Ca, TM-score) with the other restarts (consensus), or the one
lowest in a part of the energy (the distogram term; its mean over pairs |i - j| >= 12 or 24).
With ``--native-start`` each chain also descends from a near-native structure (``fold_from_native``):
is the native a minimum of the predicted potential that the restarts miss, or not one at all?

    python scripts/ablate_fold.py --chains 40 --max-length 300 \
        --variant off:separation_ramp=0 --variant fast: \
        --variant default:num_restarts=8,num_steps=400 --out docs/bench/fold_ablation_set1
    # a second, disjoint set of chains:
    python scripts/ablate_fold.py --skip 40 --cache runs/fold_ablation/predictions_set2.npz ...
    # does the predicted potential hold the native? (docs/bench/fold_ablation_native_v13_set1)
    python scripts/ablate_fold.py --native-start --native-lr 0.01 --variant default:num_restarts=8,num_steps=400,learning_rate=0.1 ...

A variant is ``name:key=value,...`` over ``FoldConfig`` fields on top of configs/fold/fast.yaml.
Writes ``<out>.json`` (per chain, per variant, per restart) and ``<out>.md`` (the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores  # noqa: E402

retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
use_all_cpu_cores()  # as the CLIs do: restarts split over the cores

import jax  # noqa: E402
import yaml  # noqa: E402

from foldnet import metrics as M  # noqa: E402
from foldnet.common import atomic  # noqa: E402
from foldnet.common import residue_constants as rc  # noqa: E402
from foldnet.common.compilation_cache import enable_compilation_cache  # noqa: E402
from foldnet.inference.predict import prior_distogram  # noqa: E402
import foldnet.structure.fold  # noqa: E402, F401
F = sys.modules["foldnet.structure.fold"]  # the module (the package re-exports its `fold` function)
from foldnet.structure.config import FoldConfig  # noqa: E402

ORIENT = ("omega", "theta", "phi")


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, overrides); values parsed as YAML scalars."""
    name, _, body = text.partition(":")
    overrides = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def base_config() -> dict:
    """configs/fold/fast.yaml over default.yaml, as hydra composes ``fold=fast``."""
    cfg = yaml.safe_load((ROOT / "configs/fold/default.yaml").read_text())
    fast = yaml.safe_load((ROOT / "configs/fold/fast.yaml").read_text())
    cfg.update({k: v for k, v in fast.items() if k != "defaults"})
    return cfg


def predictions(args) -> list[dict]:
    """The network's distributions for the first chains of the split (cached)."""
    cache = Path(args.cache)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            # caches written before --single existed hold profile-mode predictions
            single = bool(z["single"]) if "single" in z.files else False
            if single != args.single:
                raise SystemExit(f"{cache} holds {'single-sequence' if single else 'profile'}-mode predictions; "
                                 "give another --cache for the other mode")
            n = int(z["n"])
            keys = [k for k in z.files if k.startswith("0/")]
            return [{k[2:]: z[f"{i}/{k[2:]}"] for k in keys} for i in range(n)]
    from foldnet.data.cache import H5Dataset
    from foldnet.inference import pretrained
    from foldnet.inference.features import input_features
    from foldnet.inference.predict import Predictor
    from foldnet.inference.tiling import TilingConfig
    from foldnet.model.prior import Prior

    model_cfg, params = pretrained.load_for_inference(args.checkpoint)
    run_dir, _ = pretrained.checkpoint_home(args.checkpoint)
    prior = Prior.load(run_dir / "prior.npz")
    tiling = TilingConfig(stride=32, batch_size=4, pad_multiple=16)  # evaluate's, windows of the training crop
    predictor = Predictor(model_cfg, params, tiling.for_model(pretrained.training_crop(args.checkpoint)))
    ds = H5Dataset(args.h5)
    out, eligible = [], 0
    for i in range(len(ds)):
        if len(out) >= args.chains:
            break
        if ds.lengths[i] > args.max_length or ds.lengths[i] < args.min_length:
            continue
        eligible += 1
        if eligible <= args.skip:
            continue
        prot = ds.protein(i)
        dist = predictor.distributions(input_features(prot.replace(profile=None),
                                                      None if args.single else prot.profile))
        rec = {
            "id": np.asarray(prot.id), "aatype": prot.aatype,
            "ca": prot.atom_positions[:, rc.CA_IDX].astype(np.float32), "mask": prot.backbone_mask,
            "reference": prior_distogram(prior, prot).astype(np.float16),
            "dist_probs": dist["dist_probs"].astype(np.float16),
            "phi_probs": dist["phi_probs"], "psi_probs": dist["psi_probs"],
        }
        for k in ORIENT:
            if f"orient_{k}_probs" in dist:
                rec[f"orient_{k}_probs"] = dist[f"orient_{k}_probs"].astype(np.float16)
        out.append(rec)
        print(f"predicted {prot.id} ({len(prot)} residues)", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{i}/{k}": v for i, rec in enumerate(out) for k, v in rec.items()}
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, n=len(out), single=bool(args.single), **flat)
    tmp.replace(cache)
    return out


def renormalised(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, np.float32)
    return p / p.sum(-1, keepdims=True)


def predicted_potential(rec: dict, config: FoldConfig):
    """(potential, distogram, background) of a chain's cached predictions, as ``fold`` builds them;
    the distributions are renormalised after the cache's float16 rounding."""
    dist = renormalised(rec["dist_probs"])
    ref = renormalised(rec["reference"])
    orientation = None
    if config.weight_orientation > 0:
        orientation = {k: renormalised(rec[f"orient_{k}_probs"]) for k in ORIENT}
    potential, _ = F.bucketed_potential(dist, rec["phi_probs"], rec["psi_probs"], config, ref, orientation)
    return potential, dist, ref


def sampled_descent(potential, config: FoldConfig, seed: int):
    """``fold``'s restarts on ``potential``: start torsions sampled as ``fold`` seeds them, then
    ``descend`` (its tuple: phi, psi, energies, terms, trajectory, coordinates)."""
    phi0, psi0 = F.sampled_starts(potential, config, seed)
    return F.descend(potential, phi0, psi0, config)


def fold_all_restarts(rec: dict, config: FoldConfig, seed: int, predicted) -> tuple[np.ndarray, np.ndarray, dict]:
    """``fold``'s descent on ``predicted`` (``predicted_potential``), keeping every restart:
    (energies [R], CA coordinates [R, L, 3], per-restart selection scores {rule: [R], lower =
    better} for the pick rules below)."""
    length = len(rec["aatype"])
    potential, dist, ref = predicted
    _, _, energies, terms, _, coords = sampled_descent(potential, config, seed)
    coords = np.asarray(coords)[:, :length]
    scores = {"distogram_term": np.asarray(terms["distogram"], np.float64)}
    for sep in (12, 24):
        scores[f"distogram_sep{sep}"] = separated_distogram_energy(dist, ref, coords[:, :, rc.CB_IDX], sep,
                                                                   config.reference_weight, config.prob_eps)
    return np.asarray(energies), coords[:, :, rc.CA_IDX], scores


def fold_from_native(rec: dict, config: FoldConfig, potential, h5: str, seed: int, learning_rate: float) -> dict:
    """A near-native structure, descended on under the predicted ``potential``.

    The native's own torsions do not rebuild the native under folding's ideal geometry (fixed
    bonds, angles and trans omega: TM 0.34-0.44 on three validation chains), so the start is the
    native's best structure in folding's own representation: the lowest-energy restart of folding
    the smoothed native distogram and torsions (``foldnet.structure.oracle``: the evaluation's
    ``true_distogram``, with no background). From its torsions the same descent runs on the
    predicted potential, at ``learning_rate``: Adam's first steps move every torsion by about the
    learning rate, and at the restarts' 0.1 rad that alone throws a chain far off its start, so a
    small rate finds the local minimum near the native instead. If that minimum lies below the
    pick's energy, the potential prefers a near-native fold that the restarts failed to reach (the
    search limits); if above, the restarts' folds are what the potential asks for (the potential
    limits)."""
    from foldnet.data.cache import H5Dataset
    from foldnet.structure.oracle import true_distributions

    length = len(rec["aatype"])
    ds = H5Dataset(h5)
    try:
        prot = ds.protein(ds.index_of(str(rec["id"])))
    finally:
        ds.close()
    dist_o, phi_o, psi_o = true_distributions(prot)
    oracle, _ = F.bucketed_potential(dist_o, phi_o, psi_o, config)
    phi, psi, energies, _, _, coords = sampled_descent(oracle, config, seed)
    best = int(np.argmin(np.asarray(energies)))
    start_ca = np.asarray(coords)[best:best + 1, :length, rc.CA_IDX]

    local = dataclasses.replace(config, learning_rate=learning_rate)
    _, _, energies, _, trajectory, coords = F.descend(potential, phi[best:best + 1], psi[best:best + 1], local)
    ca = np.asarray(coords)[:1, :length, rc.CA_IDX]
    return {"energy": float(np.asarray(energies)[0]), "tm": score(rec, ca)[0],
            "tm_start": score(rec, start_ca)[0], "first_step_energy": float(np.asarray(trajectory)[0, 0])}


def separated_distogram_energy(dist: np.ndarray, ref: np.ndarray, cb: np.ndarray, min_sep: int,
                               reference_weight: float, prob_eps: float) -> np.ndarray:
    """Per restart, the mean of -log p_ij(d) + w log ref_ij(d) over pairs |i - j| >= ``min_sep``
    (d: the restart's CB-CB distance, read off the bin it falls in): the distogram term without
    the local pairs, whose many sharp terms outweigh the fold-level ones in the full energy."""
    length = cb.shape[1]
    i, j = np.triu_indices(length, k=min_sep)
    if len(i) == 0:
        return np.zeros(len(cb))
    # the folding potential's own floor on probabilities (StructureConfig.prob_eps)
    v = -np.log(dist[i, j] + prob_eps) + reference_weight * np.log(ref[i, j] + prob_eps)  # [P, bins]
    out = []
    for x in cb.astype(np.float64):
        d = np.linalg.norm(x[i] - x[j], axis=-1)
        out.append(float(np.mean(v[np.arange(len(i)), rc.distance_to_bin(d)])))
    return np.array(out)


def score(rec: dict, coords: np.ndarray) -> list[float]:
    ca, mask = rec["ca"].astype(np.float64), rec["mask"]
    return [M.tm_score(c.astype(np.float64), ca, mask, native_length=len(mask)) for c in coords]


def decoy_agreement(coords: np.ndarray, with_tm: bool) -> dict:
    """[R, R] agreement between the restarts' own structures (no native): symmetric lDDT-Ca and,
    when asked, TM-score; the diagonal is 1. What a consensus pick would rank the restarts by."""
    r = len(coords)
    x = coords.astype(np.float64)
    lddt = np.eye(r)
    tm = np.eye(r) if with_tm else None
    for a in range(r):
        for b in range(a + 1, r):
            lddt[a, b] = lddt[b, a] = 0.5 * (M.lddt(x[a], x[b]) + M.lddt(x[b], x[a]))
            if with_tm:
                tm[a, b] = tm[b, a] = M.tm_score(x[a], x[b])
    out = {"lddt": lddt.tolist()}
    if with_tm:
        out["tm"] = tm.tolist()
    return out


def picks(row: dict) -> dict:
    """Index of the kept restart under each selection rule."""
    e = np.array(row["energies"])
    out = {"energy": int(np.argmin(e))}
    for rule, values in row.get("scores", {}).items():
        out[rule] = int(np.argmin(values))
    for kind, mat in row["agreement"].items():
        m = np.array(mat)
        support = (m.sum(1) - 1) / max(len(m) - 1, 1)  # mean agreement with the other restarts
        out[f"consensus_{kind}"] = int(np.argmax(support))
        low = np.argsort(e)[: max(2, (len(e) + 1) // 2)]  # among the lower-energy half only
        sub = m[np.ix_(low, low)]
        out[f"low_half_consensus_{kind}"] = int(low[np.argmax(sub.sum(1))])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--h5", default="data/built/proteinnet/val.h5")
    ap.add_argument("--checkpoint", default=None, help="run dir or pretrained:<name> (default: the shipped model)")
    ap.add_argument("--chains", type=int, default=40)
    ap.add_argument("--min-length", type=int, default=40)
    ap.add_argument("--max-length", type=int, default=300)
    ap.add_argument("--skip", type=int, default=0, help="skip the first N eligible chains (a second chain set)")
    ap.add_argument("--cache", default="runs/fold_ablation/predictions.npz",
                    help="the predictions' cache (one per chain set, checkpoint and mode)")
    ap.add_argument("--single", action="store_true",
                    help="predict with the profile withheld (single-sequence mode, as for a FASTA file)")
    ap.add_argument("--variant", action="append", default=[], help="name:key=value,... (FoldConfig fields)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tm-restarts", type=int, default=8,
                    help="score restart-vs-restart TM-scores (consensus picks) up to this many restarts")
    ap.add_argument("--native-start", action="store_true",
                    help="also descend from a near-native structure (the fold of the true distogram): is its "
                         "minimum lower in energy than the pick (the search limits) or higher (the potential limits)?")
    ap.add_argument("--native-lr", type=float, default=0.01,
                    help="learning rate of the descent from the native (small: the local minimum near it)")
    ap.add_argument("--out", default="docs/bench/fold_ablation")
    args = ap.parse_args(argv)

    enable_compilation_cache("~/.cache/foldnet/jax")  # as foldnet evaluate does
    recs = predictions(args)
    variants = [parse_variant(v) for v in (args.variant or ["fast:"])]
    base = base_config()
    results = {"machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} CPU devices",
               "jax": jax.__version__, "chains": [str(r["id"]) for r in recs],
               "lengths": [len(r["aatype"]) for r in recs], "seed": args.seed,
               "mode": "single-sequence" if args.single else "profile", "variants": {}}
    if args.native_start:
        results["native_lr"] = args.native_lr
    for name, overrides in variants:
        config = FoldConfig.from_dict({**base, **overrides})
        rows, t0 = [], time.perf_counter()
        for rec in recs:
            predicted = predicted_potential(rec, config)  # built once, for the restarts and the native start
            energies, coords, scores = fold_all_restarts(rec, config, args.seed, predicted)
            tms = score(rec, coords)
            row = {"energies": energies.tolist(), "tm": tms, "picked": int(np.argmin(energies)),
                   "scores": {k: v.tolist() for k, v in scores.items()},
                   "agreement": decoy_agreement(coords, with_tm=len(coords) <= args.max_tm_restarts)}
            row["picks"] = picks(row)
            if args.native_start:
                row["native_start"] = fold_from_native(rec, config, predicted[0], args.h5, args.seed, args.native_lr)
            rows.append(row)
        seconds = time.perf_counter() - t0
        picked = np.array([r["tm"][r["picked"]] for r in rows])
        best = np.array([max(r["tm"]) for r in rows])
        corr = [M.spearman(-np.array(r["energies"]), np.array(r["tm"])) for r in rows if len(r["tm"]) > 2]
        results["variants"][name] = {
            "overrides": overrides, "seconds": seconds, "per_chain": rows,
            "median_tm": float(np.median(picked)), "mean_tm": float(np.mean(picked)),
            "tm_ge_05": float(np.mean(picked >= 0.5)),
            "median_best_of_restarts": float(np.median(best)), "mean_best_of_restarts": float(np.mean(best)),
            "mean_spearman_energy_tm": float(np.nanmean(corr)) if corr else float("nan"),
            "by_pick": {rule: {"median_tm": float(np.median(tm)), "mean_tm": float(np.mean(tm)),
                               "tm_ge_05": float(np.mean(tm >= 0.5))}
                        for rule in rows[0]["picks"]
                        for tm in [np.array([r["tm"][r["picks"][rule]] for r in rows])]},
        }
        if args.native_start:
            nat = [r["native_start"] for r in rows]
            gap = np.array([n["energy"] - min(r["energies"]) for n, r in zip(nat, rows)])
            results["variants"][name]["native_start"] = {
                "median_tm": float(np.median([n["tm"] for n in nat])),
                "mean_tm": float(np.mean([n["tm"] for n in nat])),
                "median_tm_start": float(np.median([n["tm_start"] for n in nat])),
                "fraction_below_pick": float(np.mean(gap < 0)),
                "median_energy_minus_pick": float(np.median(gap)),
                "median_tm_where_below": float(np.median([r["tm"][r["picked"]] for r, g in zip(rows, gap) if g < 0]))
                if (gap < 0).any() else float("nan"),
                "median_native_tm_where_below": float(np.median([n["tm"] for n, g in zip(nat, gap) if g < 0]))
                if (gap < 0).any() else float("nan"),
            }
        v = results["variants"][name]
        print(f"{name:24s} median TM {v['median_tm']:.3f} mean {v['mean_tm']:.3f} >=0.5 {v['tm_ge_05']:.2f} "
              f"best-of-R median {v['median_best_of_restarts']:.3f} rho(E,TM) {v['mean_spearman_energy_tm']:.2f} "
              f"{seconds:.0f} s", flush=True)
        if "native_start" in v:
            n = v["native_start"]
            print(f"    native start: median TM {n['median_tm']:.3f}, its minimum below the pick's energy in "
                  f"{n['fraction_below_pick']:.0%} of chains (median E_native - E_pick {n['median_energy_minus_pick']:+.1f})",
                  flush=True)
        for rule, b in v["by_pick"].items():
            print(f"    pick {rule:28s} median TM {b['median_tm']:.3f} mean {b['mean_tm']:.3f} >=0.5 {b['tm_ge_05']:.2f}",
                  flush=True)
    write(results, Path(args.out))
    return 0


def write(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(results["variants"])
    ref = np.array([r["tm"][r["picked"]] for r in results["variants"][names[0]]["per_chain"]])
    lines = [
        "# Folding ablation (validation split)", "",
        f"Machine: {results['machine']}; jax {results['jax']}; seed {results['seed']}; "
        f"{len(results['chains'])} chains, lengths {min(results['lengths'])}-{max(results['lengths'])}. "
        f"Same predictions in every row ({results.get('mode', 'profile')} mode); paired differences against the "
        "first row.", "",
        "| variant | overrides | median TM | mean TM | TM >= 0.5 | paired mean dTM | better / worse (> 0.01) "
        "| best-of-restarts median TM | Spearman(-E, TM) | fold s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        v = results["variants"][name]
        picked = np.array([r["tm"][r["picked"]] for r in v["per_chain"]])
        d = picked - ref
        ov = ", ".join(f"{k}={val}" for k, val in v["overrides"].items()) or "fold=fast"
        lines.append(
            f"| {name} | {ov} | {v['median_tm']:.3f} | {v['mean_tm']:.3f} | {v['tm_ge_05']:.0%} | {d.mean():+.3f} | "
            f"{int((d > 0.01).sum())} / {int((d < -0.01).sum())} | {v['median_best_of_restarts']:.3f} | "
            f"{v['mean_spearman_energy_tm']:.2f} | {v['seconds']:.0f} |")
    rules = list(results["variants"][names[0]].get("by_pick", {}))
    if rules:
        lines += [
            "", "Restart selection rules (same restarts; `energy` is what `fold` does; `consensus_*`: the restart "
            "with the highest mean lDDT-Ca / TM-score to the other restarts; `low_half_*`: the same among the "
            "lower-energy half):", "",
            "| variant | " + " | ".join(f"{r} median / mean TM" for r in rules) + " |",
            "|---|" + "---|" * len(rules),
        ]
        for name in names:
            b = results["variants"][name]["by_pick"]
            lines.append(f"| {name} | " + " | ".join(
                f"{b[r]['median_tm']:.3f} / {b[r]['mean_tm']:.3f}" if r in b else "-" for r in rules) + " |")
    native = [n for n in names if "native_start" in results["variants"][n]]
    if native:
        lines += [
            "", f"Descent from a near-native start (the lowest-energy fold of the smoothed native distogram and "
            f"torsions, in folding's own ideal-geometry representation) on the predicted potential, learning rate "
            f"{results.get('native_lr')}: is its minimum lower in energy than the pick's (the search missed it) or "
            "higher (the potential prefers the restarts' folds)?", "",
            "| variant | start: median TM | after the descent: median / mean TM | its energy below the pick's | median E(native start) - E(pick) "
            "| on those chains: median TM of its minimum / of the pick |",
            "|---|---|---|---|---|---|",
        ]
        for name in native:
            n = results["variants"][name]["native_start"]
            lines.append(f"| {name} | {n['median_tm_start']:.3f} | {n['median_tm']:.3f} / {n['mean_tm']:.3f} | {n['fraction_below_pick']:.0%} | "
                         f"{n['median_energy_minus_pick']:+.1f} | {n.get('median_native_tm_where_below', float('nan')):.3f} / "
                         f"{n['median_tm_where_below']:.3f} |")
    # The restart-vs-restart agreement matrices stay out of the file (R^2 numbers per chain and
    # variant); the picks they led to are kept.
    slim = json.loads(json.dumps(results))
    for v in slim["variants"].values():
        for row in v["per_chain"]:
            row.pop("agreement", None)
    # names are appended, not swapped in: --out may hold a dot (".../fold_ablation_lr0.1")
    atomic.write_text(out.parent / f"{out.name}.json", json.dumps(slim, indent=1))
    atomic.write_text(out.parent / f"{out.name}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
