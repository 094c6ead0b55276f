#!/bin/bash
set -e
mkdir -p /data/projects && cd /data/projects
mkdir -p alpha/src beta gamma/data/raw delta epsilon
head -c 50000 /dev/zero > alpha/src/big.bin
head -c 1200 /dev/zero > beta/notes.txt
head -c 90000 /dev/zero > gamma/data/raw/dump.bin
head -c 30000 /dev/zero > delta/a.bin; head -c 30000 /dev/zero > delta/b.bin
head -c 100 /dev/zero > epsilon/readme
