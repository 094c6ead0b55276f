#!/usr/bin/env bash
# The test suite as three pytest processes side by side: the tests on the smoke run's outputs
# (the smoke `dvc repro` is most of their time), the other tests that need Docker, and the rest
# (loopback servers, outages that are waited out, a served CPU model), which start no container.
# Everything litecoder makes in Docker carries its project root, and each process's projects
# live under its own --basetemp, so each leftover check sees only its own process's containers
# (tests/conftest.py). The wall time is the longest of the three. Arguments go to all three
# (e.g. -x, -k NAME).
set -u
cd "$(dirname "$0")/.."
base=${TMPDIR:-/tmp}/litecoder-tests-$$
mkdir -p "$base"
group() {  # NAME NICENESS MARKERS ARGS...: one pytest process, its output in $base/NAME.log
  local name=$1 niceness=$2 markers=$3
  shift 3
  nice -n "$niceness" python -m pytest -q -p no:cacheprovider --basetemp="$base/$name" \
    -m "$markers" "$@" >"$base/$name.log" 2>&1
}
# The smoke group is the longest (the pipeline trains and serves a real model on the CPU): the
# other two yield the CPU to it (nice), so the wall time is not the sum of all three.
group smoke 0 "docker and not cluster and (smoke or leftovers)" "$@" &
smoke=$!
group other 10 "not cluster and not docker" "$@" &
other=$!
# The remaining Docker tests print as they go.
nice -n 10 python -m pytest -q -p no:cacheprovider --basetemp="$base/docker" \
  -m "docker and not cluster and not smoke" "$@"
docker_rc=$?
wait "$smoke"
smoke_rc=$?
wait "$other"
other_rc=$?
echo "--- tests on the smoke run's outputs (ran alongside) ---"
cat "$base/smoke.log"
echo "--- tests that need no Docker (ran alongside) ---"
cat "$base/other.log"
# pytest exits 5 when a marker selects nothing (e.g. -k NAME hit only one group): not a failure.
for v in docker_rc smoke_rc other_rc; do [ "${!v}" = 5 ] && printf -v "$v" 0; done
rc=$(( docker_rc || smoke_rc || other_rc ))
[ "$rc" = 0 ] && rm -rf "$base"  # kept on failure, to look at
exit "$rc"
