#!/bin/bash
set -e
cd /data/projects
du -sb -- */ | sed 's#/$##' | sort -k1,1nr | head -n 3 | awk '{print $1" "$2}' > /root/usage.txt
