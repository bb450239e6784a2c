#!/usr/bin/env bash
# The pytest part of `make test`: the stack is up and its environment is in this shell's.
#
# 1. Everything that uses the stack without stopping it, on TEST_WORKERS pytest workers (pytest-xdist,
#    a test file per worker at a time): most of that time is spent waiting on the services.
# 2. The tests that stop the stack's services (marker `disruptive`: tests/reliability/test_outages.py),
#    alone on the stack; meanwhile the tests that need no service (engine, code, data) use, niced, the
#    CPU that the outages leave idle. Their output is printed after the outages' own.
#
# Tests marked `heavy` run only with TEST_HEAVY=1.
# Exit status: the first failing run's (pytest's 5, nothing collected, counts as a failure).
set -u
PY=${PY:-.venv/bin/python}
WORKERS=${TEST_WORKERS:-2}
heavy="not heavy"
[ "${TEST_HEAVY:-0}" != "0" ] && heavy="heavy or not heavy"
SERVICE_FREE=(tests/code tests/data tests/model)
ignore=()
for path in "${SERVICE_FREE[@]}"; do ignore+=("--ignore=$path"); done

# --no-loadscope-reorder: the order of tests/conftest.py (slowest files first), not by number of tests
"$PY" -m pytest tests -q -n "$WORKERS" --dist loadfile --no-loadscope-reorder -m "not disruptive and ($heavy)" --durations=15 "${ignore[@]}"
shared=$?

log=$(mktemp)
# niced: the outage tests restart services, which must come back within the tasks' retry window
nice -n 10 "$PY" -m pytest "${SERVICE_FREE[@]}" -q -m "not disruptive and ($heavy)" >"$log" 2>&1 &
free_pid=$!
"$PY" -m pytest tests -q -m disruptive "${ignore[@]}"
disruptive=$?
wait "$free_pid"
free=$?
echo "--- the tests that need no service (run beside the outages):"
cat "$log"
rm -f "$log"

for status in "$shared" "$disruptive" "$free"; do
    if [ "$status" -ne 0 ]; then
        [ "$status" -eq 5 ] && echo "make test: a pytest run collected no tests" >&2
        exit "$status"
    fi
done
exit 0
