#!/bin/bash
set -e
mkdir -p /app/notes/sub
printf 'a\nb\nc\n' > /app/notes/one.txt
printf 'x\n' > /app/notes/sub/two.txt
printf 'p\nq\n' > /app/notes/sub/three.txt
printf 'ignored\n' > /app/notes/skip.md
