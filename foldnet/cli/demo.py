"""``foldnet demo``: build -> train -> predict -> evaluate on the bundled data (thin driver).

Each stage calls the same library function as its own command, with the config
that command would compose (``configs/demo.yaml`` names the overrides), so the
demo is exactly what a user runs step by step.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from hydra import compose
from omegaconf import DictConfig

from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores
from foldnet.common.paths import config_dir

_CONFIGS = config_dir()


def _compose(name: str, overrides: list[str]) -> DictConfig:
    return compose(config_name=name, overrides=overrides)


def _demo_fasta(root: Path, out: Path) -> Path:
    """Two real sequences from the bundle: PSICOV's 1guuA and a held-out test chain."""
    from foldnet.data.fasta import read_fasta
    from foldnet.data.proteinnet import iter_proteinnet

    guu = read_fasta(root / "pdnet_related" / "disteval_1guuA" / "1guuA.fasta")[0]
    test = next(p for p in iter_proteinnet(root / "proteinnet" / "testing.gz") if 60 <= len(p) <= 90)
    path = out / "demo.fasta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f">1guuA PSICOV set\n{guu.sequence}\n>{test.id} ProteinNet test split\n{test.sequence}\n")
    return path


def run(cfg: DictConfig) -> dict[str, str]:
    from foldnet.cli import build_dataset as build_cli
    from foldnet.common.paths import data_root
    from foldnet.data.config import register_configs as reg_data
    from foldnet.inference.config import register_configs as reg_inf, to_config
    from foldnet.inference.evaluate import EvaluateConfig, evaluate
    from foldnet.inference.predict import PredictConfig, predict
    from foldnet.train.config import register_configs as reg_train
    from foldnet.train.loop import train

    reg_data(), reg_train(), reg_inf()
    root = data_root(cfg.data_root)
    out = Path(cfg.out_dir).absolute()
    where: dict[str, str] = {}
    t0 = time.perf_counter()

    print(f"[1/4] build dataset data={cfg.data} (data root {root})", flush=True)
    bcfg = _compose("build_dataset", [f"data={cfg.data}", f"data_root={root}"])
    build_cli.run(bcfg)
    where["dataset"] = str(Path(bcfg.data.dir).absolute())

    print(f"[2/4] train {cfg.train_steps} steps ({' '.join(cfg.train_overrides)})", flush=True)
    run_dir = out / "train_run"
    tcfg = _compose("train", [f"data={cfg.data}", *cfg.train_overrides, f"steps={cfg.train_steps}",
                              f"run_dir={run_dir}", f"data_root={root}"])
    summary = train(tcfg)
    where["training run"] = str(run_dir)

    print("[3/4] predict", flush=True)
    fasta = Path(cfg.predict_fasta) if cfg.predict_fasta else _demo_fasta(root, out)
    pcfg = _compose("predict", [f"input={fasta}", f"out_dir={out / 'predictions'}", f"fold={cfg.fold}"])
    if cfg.predict_checkpoint:
        pcfg.checkpoint = str(cfg.predict_checkpoint)
    results = predict(to_config(pcfg, PredictConfig))
    where["predictions"] = str(out / "predictions")

    print(f"[4/4] evaluate {cfg.eval_domains} held-out CATH test domains", flush=True)
    ecfg = _compose("evaluate", [f"out_dir={out / 'evaluation'}", f"max_domains={cfg.eval_domains}",
                                 f"max_length={cfg.eval_max_length}", f"data_root={root}", f"fold={cfg.fold}",
                                 "methods=[" + ",".join(cfg.eval_methods) + "]"])
    if cfg.predict_checkpoint:
        ecfg.checkpoint = str(cfg.predict_checkpoint)
    esum = evaluate(to_config(ecfg, EvaluateConfig))
    where["evaluation"] = str(out / "evaluation")

    print(f"\nfoldnet demo finished in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"  training: {summary.get('steps_done')} steps, final loss {summary.get('final_train_loss'):.3f}")
    ok = sum(r.ok for r in results)
    print(f"  predicted {ok}/{len(results)} records")
    pred = out / "predictions"
    for r in results:
        if r.ok:
            # What a user reads first: the pLDDT (B-factors), the distance-error matrix, the plot.
            print(f"    {r.id}: structure {pred / r.file}.pdb (pLDDT in the B-factors), "
                  f"distance error {pred / r.file}_pde.json, plot {pred / r.file}.png")
    print(f"  evaluated {esum.get('num_domains')} domains; report: {out / 'evaluation' / 'report.md'}")
    calib = esum.get("confidence_calibration", {})
    for m, c in calib.items():
        if c.get("num_domains"):
            print(f"    {m}: pLDDT vs true lDDT-Ca per residue r={c['residue_pearson']:.2f}, "
                  f"mean pLDDT {c['mean_plddt']:.1f} vs true {c['mean_true_lddt']:.1f} "
                  f"(reliability diagram: {out / 'evaluation' / 'plddt_reliability.png'})")
    print("outputs:")
    for k, v in where.items():
        print(f"  {k:<14} {v}")
    return where


@hydra.main(config_path=_CONFIGS, config_name="demo", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from foldnet.cli.common import quiet_logs

    quiet_logs()  # orbax per-save lines; "no TPU" notices
    run(cfg)


def main() -> None:
    retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
    use_all_cpu_cores()  # training batches and folding restarts split across the cores
    _app()


if __name__ == "__main__":
    main()
