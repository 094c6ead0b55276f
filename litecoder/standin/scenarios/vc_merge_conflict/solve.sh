#!/bin/bash
set -e
cd /app/repo
git config user.email dev@example.com && git config user.name Dev
git merge feature/greeting -m "Merge feature/greeting" || true
cat > greet.py <<'PY'
import argparse


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="world")
    parser.add_argument("--shout", action="store_true")
    args = parser.parse_args(argv)
    text = f"Hello, {args.name}!"
    print(text.upper() if args.shout else text)


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
PY
git add greet.py
git commit -qm "Merge feature/greeting"
