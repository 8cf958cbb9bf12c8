"""`python -m fedicra.report STEP ...`: the `fedicra report` command group on its own.

The workflow's report rules call this entry point so they only import the report package.
"""
import argparse
import sys

from fedicra.errors import run_cli
from fedicra.report.commands import register


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedicra.report")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
