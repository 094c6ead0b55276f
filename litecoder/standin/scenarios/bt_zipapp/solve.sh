#!/bin/bash
set -e
cd /app
version=$(cat VERSION)
echo "__version__ = \"$version\"" > tool/tool/__init__.py
find tool -name __pycache__ -type d -prune -exec rm -rf {} +
mkdir -p dist
python3 -m zipapp tool -m tool.cli:main -p "/usr/bin/env python3" -o dist/tool.pyz
