"""`casfs`: the command-line entry point.

Every subcommand is a function `(args, ctx) -> int`; `main(argv)` is callable from
tests. Exit codes: 0 success, 1 problems found in the data, 2 usage or environment
errors (bad option, missing store, bad config, an unreachable catalog), 70 a bug in
casfs (an unexpected exception: its traceback goes to stderr), 130 interrupted.
Human output by default, `--json` for scripts; errors go to stderr as one line that
says what to do.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from casfs import __version__
from casfs.config import load_config, resolve_store
from casfs.errors import CasfsError

from . import (
    bench_command,
    completion,
    import_commands,
    integrity_commands,
    lifecycle_commands,
    lookup_commands,
    migrate_command,
    mount_commands,
    snapshot_commands,
    store_commands,
)
from .context import Context

EXIT_BUG = 70  # sysexits' EX_SOFTWARE: never 1, which means "problems found in the data"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casfs",
        description="A content-addressed store of documents, shown as a filesystem: "
                    "/<resolver>/<artifact_id>/<basename>.",
        epilog="The store is --store, else $CASFS_STORE, else 'store' in the config file "
               "($CASFS_CONFIG or the platform config dir), else the platform data dir.")
    parser.add_argument("--store", metavar="DIR", help="the store directory")
    parser.add_argument("--config", metavar="FILE", type=Path, help="the config file to read")
    parser.add_argument("--version", action="version", version=f"casfs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    store_commands.register(commands)
    mount_commands.register(commands)
    import_commands.register(commands)
    lookup_commands.register(commands)
    integrity_commands.register(commands)
    lifecycle_commands.register(commands)
    snapshot_commands.register(commands)
    migrate_command.register(commands)
    bench_command.register(commands)
    completion.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        ctx = Context(resolve_store(args.store, config), config, store_given=bool(args.store))
        return int(args.func(args, ctx))
    except CasfsError as e:
        print(f"casfs: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `casfs ... | head`: stop quietly, like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as e:  # the machine said no (a full disk, a permission): one line
        where = f": {e.filename}" if e.filename else ""
        print(f"casfs: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("casfs: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("casfs: internal error (a bug in casfs; the traceback above says where)",
              file=sys.stderr)
        return EXIT_BUG
