"""The ``shendu`` command."""

from __future__ import annotations

import argparse
import sys


def _tour(args) -> int:
    from shendu.tour import run_tour

    return run_tour(quick=args.quick, only=args.only)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shendu",
        description="shendu (深度): the classic algorithms of deep learning on NumPy.",
        epilog="Example: shendu tour --quick",
    )
    from shendu import __version__

    p.add_argument("--version", action="version", version=f"shendu {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("tour", help="train the classic algorithms on built-in data and "
                       "show their famous results",
                       description="Train each classic algorithm on its classic task.",
                       epilog="Examples:\n  shendu tour\n  shendu tour --quick\n"
                              "  shendu tour --only mlp",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--quick", action="store_true", help="smaller budgets (about a minute)")
    t.add_argument("--only", metavar="NAME", default=None, help="run one chapter")
    t.set_defaults(func=_tour)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("shendu: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"shendu: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
