#!/bin/bash
set -e
cd /app/notes
{ find . -name '*.txt' | sed 's#^\./##' | while read -r f; do echo "$f $(wc -l < "$f")"; done \
    | sort -k2,2nr -k1,1; echo "total $(cat $(find . -name '*.txt') | wc -l)"; } > /app/report.txt
