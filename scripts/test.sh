#!/usr/bin/env bash
# The test suite as two pytest processes side by side: the tests that need Docker, and the
# rest (loopback servers, outages that are waited out, a served CPU model), which never start
# a container, so the Docker tests' checks for leftover containers see only their own. The
# wall time is the longer of the two. Arguments go to both (e.g. -x, -k NAME).
set -u
cd "$(dirname "$0")/.."
base=${TMPDIR:-/tmp}/litecoder-tests-$$
log=$base-other.log
mkdir -p "$base"
python -m pytest -q -p no:cacheprovider --basetemp="$base/other" -m "not cluster and not docker" "$@" >"$log" 2>&1 &
other=$!
python -m pytest -q -p no:cacheprovider --basetemp="$base/docker" -m "docker and not cluster" "$@"
docker_rc=$?
wait "$other"
other_rc=$?
echo "--- tests that need no Docker (ran alongside) ---"
cat "$log"
# pytest exits 5 when a marker selects nothing (e.g. -k NAME hit only one group): not a failure.
[ "$docker_rc" = 5 ] && docker_rc=0
[ "$other_rc" = 5 ] && other_rc=0
rc=$(( docker_rc || other_rc ))
[ "$rc" = 0 ] && rm -rf "$base" "$log"  # kept on failure, to look at
exit "$rc"
