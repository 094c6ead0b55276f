#!/bin/bash
set -e
cd /app/repo
git init -q -b main
git config user.email dev@example.com && git config user.name Dev
git add greet.py && git commit -qm "Initial greeter"
git checkout -qb feature/greeting
cat > greet.py <<'PY'
import argparse


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="world")
    args = parser.parse_args(argv)
    print(f"Hello, {args.name}!")


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
PY
git commit -qam "Add --name option"
git checkout -q main
cat > greet.py <<'PY'
import argparse


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--shout", action="store_true")
    args = parser.parse_args(argv)
    text = "Hello, world!"
    print(text.upper() if args.shout else text)


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
PY
git commit -qam "Add --shout flag"
