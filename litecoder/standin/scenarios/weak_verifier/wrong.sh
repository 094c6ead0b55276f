#!/bin/bash
set -e
echo 0 > /app/report.txt
