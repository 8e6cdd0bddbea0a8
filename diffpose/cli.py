"""The ``diffpose`` command: one subcommand per pipeline stage.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args)``;
the module is imported only when its subcommand runs, so ``diffpose --help`` stays fast and a
stage never pays for another stage's imports (torch, mlflow, ...). dvc.yaml, the Snakefile and a
person at a shell all call these same commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from diffpose import __version__
from diffpose.errors import DiffposeError
from diffpose.io import check_writable

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("diffpose.stages.synth", "generate the synthetic PoseTrack benchmark (videos + annotations)"),
    "frames": ("diffpose.stages.frames", "decode videos into PoseTrack-layout JPEG frames"),
    "detect": ("diffpose.stages.detect", "detect people and write COCO-format boxes"),
    "train": ("diffpose.stages.train", "train DiffPose or the single-frame baseline"),
    "infer": ("diffpose.stages.infer", "predict poses and write PoseTrack18 prediction files"),
    "predict": ("diffpose.stages.predict", "run a checkpoint on any video and draw the skeletons"),
    "evaluate": ("diffpose.stages.evaluate", "PoseTrack mAP (official poseval algorithm) and COCO OKS AP"),
    "validate": ("diffpose.stages.validate", "check PoseTrack17/18/21 annotation files"),
    "convert": ("diffpose.stages.convert", "convert annotations between PoseTrack17 and PoseTrack18 formats"),
    "train-detector": ("diffpose.stages.train_detector", "train the synthetic benchmark's person detector (CenterNet)"),
    "tables": ("diffpose.stages.tables", "the paper's tables, ablations and plots from the DAG's results (pandas)"),
    "report": ("diffpose.stages.report", "one self-contained offline HTML page: tables, plots, skeletons, boxes"),
    "compare": ("diffpose.stages.compare", "compare tracked runs and experiments (params that differ, metrics)"),
    "download": ("diffpose.stages.download", "download PoseTrack, boxes and weights from a manifest (resumable, checksummed)"),
    "register": ("diffpose.stages.register", "point the pipeline at a PoseTrack copy you already have (checked, not copied)"),
}

# subcommand -> {argument: kind} of the paths it writes (kinds of diffpose.io.check_writable). They
# are checked before the stage starts: a bad --out must fail in a second, not after the training.
OUTPUTS: dict[str, dict[str, str]] = {
    "synth": {"out": "dir"},
    "detect": {"out": "file", "metrics": "file"},
    "train": {"out": "dir"},
    "infer": {"out": "dir", "record": "file"},
    "predict": {"out": "dir"},
    "evaluate": {"out": "file", "per_sequence": "dir"},
    "convert": {"dst": "any"},
    "train-detector": {"out": "file", "metrics": "file"},
    "tables": {"out": "dir", "plots": "dir"},
    "report": {"out": "file"},
    "compare": {"csv": "file"},
    "download": {"dest": "dir", "record": "file"},
    "register": {"out": "file"},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffpose", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"diffpose {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse only the command name here; the stage module builds its own full parser.
    top, rest = parser.parse_known_args(argv[: _command_position(argv) + 1] if argv else argv)
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    name = top.command
    module = importlib.import_module(COMMANDS[name][0])
    stage_parser = argparse.ArgumentParser(prog=f"diffpose {name}", description=COMMANDS[name][1])
    module.add_arguments(stage_parser)
    args = stage_parser.parse_args(argv[_command_position(argv) + 1 :])
    args.command_line = [name, *argv[_command_position(argv) + 1 :]]  # what a torchrun relaunch repeats
    try:
        for dest, kind in OUTPUTS.get(name, {}).items():
            if getattr(args, dest, None):
                check_writable(getattr(args, dest), kind)
        return int(module.main(args) or 0)
    except DiffposeError as err:
        print(f"diffpose {name}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `diffpose ... | head`: the reader left; nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
        return 0
    except OSError as err:  # an output (or input) path the system refuses: name it, no traceback
        print(f"diffpose {name}: error: {_describe(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffpose {name}: interrupted", file=sys.stderr)
        return 130


def _describe(err: OSError) -> str:
    """``<path>: <reason>``; for a rename (``os.replace(tmp, final)``) the path is the final one."""
    path = err.filename2 if err.filename2 is not None else err.filename
    reason = err.strerror or str(err)
    return f"{os.fsdecode(path)}: {reason}" if path is not None else reason


def _command_position(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        if arg in COMMANDS:
            return i
    return len(argv) - 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
