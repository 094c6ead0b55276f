#!/bin/bash
set -e
echo 'not done yet' > /app/notes.txt
