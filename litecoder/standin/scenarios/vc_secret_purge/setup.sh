#!/bin/bash
set -e
cd /app/service
git init -q -b main
git config user.email dev@example.com && git config user.name Dev
git add app.py && git commit -qm "Add service"
printf 'TOKEN=abc123\n' > config/secrets.env
git add config && git commit -qm "Add configuration"
echo "print('v2')" >> app.py && git commit -qam "Service v2"
printf 'TOKEN=def456\n' > config/secrets.env && git commit -qam "Rotate token"
