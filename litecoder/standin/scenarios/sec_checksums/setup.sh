#!/bin/bash
set -e
cd /app/downloads
printf 'gone\n' > app-0.9.tar
sha256sum app-0.9.tar app-1.0.tar app-1.1.tar app-1.2.tar notes.txt > SHA256SUMS
rm app-0.9.tar
printf 'evil\n' >> app-1.1.tar
printf 'changed\n' > notes.txt
