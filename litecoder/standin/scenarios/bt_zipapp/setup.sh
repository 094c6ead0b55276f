#!/bin/bash
set -e
cd /app/tool && python3 -c 'import tool.cli'
