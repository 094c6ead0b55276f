#!/bin/bash
set -e
cd /app/services
used=$(grep -h '^listen' $(ls *.conf | grep -v '^metrics.conf$') | awk '{print $3}')
port=9100
while echo "$used" | grep -qx "$port"; do port=$((port+1)); done
sed -i "s/^listen = .*/listen = $port/" metrics.conf
for f in *.conf; do echo "$f $(awk '/^listen/{print $3}' "$f")"; done \
  | sort -k2,2n -k1,1 > /app/ports.txt
