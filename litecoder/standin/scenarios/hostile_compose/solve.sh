#!/bin/bash
set -e
echo done > /app/notes.txt
