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
    sys.argv = [f"foldnet {cmd}"] + argv[1:]
    module.main()


if __name__ == "__main__":
    main()
