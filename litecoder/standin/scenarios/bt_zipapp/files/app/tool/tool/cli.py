import argparse

from tool import __version__


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="cmd")
    greet = sub.add_parser("greet")
    greet.add_argument("name")
    args = parser.parse_args(argv)
    if args.cmd == "greet":
        print(f"Hello, {args.name}")
