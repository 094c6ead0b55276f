#!/bin/bash
set -e
mkdir -p /app/quarantine
cd /app/downloads
: > /app/quarantine/REPORT.txt; : > /app/quarantine/MISSING.txt
while read -r sum name; do
  if [ ! -e "$name" ]; then echo "$name" >> /app/quarantine/MISSING.txt
  elif [ "$(sha256sum "$name" | cut -d' ' -f1)" != "$sum" ]; then
    mv "$name" /app/quarantine/ && echo "$name" >> /app/quarantine/REPORT.txt
  fi
done < SHA256SUMS
sort -o /app/quarantine/REPORT.txt /app/quarantine/REPORT.txt
sort -o /app/quarantine/MISSING.txt /app/quarantine/MISSING.txt
