#!/bin/bash
set -e
cd /srv/cache
now=$(cat .now)
cutoff=$((now - 7*86400))
n=0
while IFS= read -r -d '' f; do
  if [ "$(stat -c %Y "$f")" -lt "$cutoff" ]; then rm -f "$f"; n=$((n+1)); fi
done < <(find /srv/cache -type f ! -name '*.keep' ! -path /srv/cache/.now -print0)
find /srv/cache -mindepth 1 -type d -empty -delete
echo "deleted=$n" > /var/log/cache-cleanup.log
