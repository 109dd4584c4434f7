"""``foldnet <command> [hydra overrides...]``: dispatch to one hydra entry point.

Each command is a thin hydra app in ``foldnet.cli.<module>`` exposing ``main()``;
this dispatcher only strips the command word so hydra sees its own argv.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "fetch": ("foldnet.cli.fetch", "download PDB/mmCIF, CATH and PDNet data into a local cache"),
    "build-dataset": ("foldnet.cli.build_dataset", "parse + featurise a source into HDF5 splits"),
    "train": ("foldnet.cli.train", "train the torsion/distogram ResNets"),
    "predict": ("foldnet.cli.predict", "predict structures for the records of a FASTA file"),
    "evaluate": ("foldnet.cli.evaluate", "evaluate a checkpoint on held-out CATH domains"),
    "demo": ("foldnet.cli.demo", "the whole path on the bundled data: build, train, predict, evaluate"),
}


def _usage() -> str:
    lines = ["usage: foldnet <command> [key=value ...]  (hydra overrides; --help per command)", "", "commands:"]
    lines += [f"  {name:<14} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    cmd = argv[0]
    if cmd not in COMMANDS:
        print(f"foldnet: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(COMMANDS[cmd][0])
    if not any(a.startswith("-") for a in argv[1:]):  # --help, --cfg, -m: hydra's own business
        precheck_overrides(cmd, CONFIG_NAMES[cmd], argv[1:])
    sys.argv = [f"foldnet {cmd}"] + argv[1:]
    module.main()


CONFIG_NAMES = {"fetch": "fetch", "build-dataset": "build_dataset", "train": "train", "predict": "predict",
                "evaluate": "evaluate", "demo": "demo"}


def precheck_overrides(cmd: str, config_name: str, overrides: list[str]) -> None:
    """Compose the command's config once before hydra runs it, so an unknown key or a value of the
    wrong type ends in one line naming the key (hydra prints several, and exits 1)."""
    from hydra import compose, initialize_config_dir
    from omegaconf.errors import OmegaConfBaseException

    from foldnet.common.paths import config_dir

    configs = config_dir()
    user = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_dir(config_dir=configs, version_base="1.3"):
            compose(config_name=config_name, overrides=user)
    except Exception as e:  # noqa: BLE001 - hydra / omegaconf composition errors of every kind
        cause = e
        while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
            cause = cause.__cause__
        key = getattr(cause, "full_key", None)
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        msg = f"{key}: {text}" if key and not text.startswith(str(key)) else text
        print(f"foldnet {cmd}: {msg}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
