#!/bin/bash
set -e
cd /srv/cache
now=1700000000
mkdir -p img/old css tmp/deep
for f in img/a.png img/old/b.png css/site.css tmp/deep/x.bin tmp/y.bin; do echo data > "$f"; done
echo keep > img/old/logo.keep
echo fresh > img/new.png
touch -d @$((now - 30*86400)) img/a.png img/old/b.png tmp/deep/x.bin img/old/logo.keep
touch -d @$((now - 8*86400)) tmp/y.bin
touch -d @$((now - 6*86400)) css/site.css
touch -d @$((now - 1*86400)) img/new.png
touch -d @$now .now
