#!/bin/bash
set -e
cd /srv/cache
n=$(find /srv/cache -type f ! -name .now ! -newermt @$(( $(cat .now) - 7*86400 )) | wc -l)
find /srv/cache -type f ! -name .now ! -newermt @$(( $(cat .now) - 7*86400 )) -delete
echo "deleted=$n" > /var/log/cache-cleanup.log
