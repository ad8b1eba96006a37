#!/bin/sh
# The demo is README's first command: it must keep working (mock cluster, memory store, the
# three jobs) and say what it did. Usage: demo_runs.sh RISKFLOWD. Checks, on a short run:
# exit 0; every card payment scored by fraud; the poison, and nothing else, dead-lettered;
# PD updates and market signals produced; the market's poison counted as its dead letters;
# alerts, band changes and signals printed.
set -u
bin=$1
out=$("$bin" --demo -X demo.events=3000 2>/dev/null) || { echo "demo exited $?"; exit 1; }
summary=$(printf '%s\n' "$out" | sed -n '/== riskflowd summary ==/,$p')
printf '%s\n' "$summary"
fail() { echo "demo_runs: $*"; exit 1; }
field() { printf '%s\n' "$summary" | sed -n "$1" | head -n 1; }
poison=$(field 's/^generated:.* and \([0-9]*\) poison messages$/\1/p')
dlq=$(field 's/^dead-lettered: *\([0-9]*\).*/\1/p')
scores=$(field 's/^fraud .*; \([0-9]*\) scores, .*/\1/p')
pds=$(field 's/^credit .*; \([0-9]*\) pd_updates.*/\1/p')
signals=$(field 's/^market .*; \([0-9]*\) signals.*/\1/p')
mkt_dlq=$(field 's/^market .*; \([0-9]*\) dead-lettered;.*/\1/p')
[ "$scores" = 3000 ] || fail "fraud scored '$scores' payments, want 3000"
[ -n "$poison" ] && [ "$poison" -gt 0 ] || fail "no poison generated"
[ "$dlq" = "$poison" ] || fail "dead-lettered '$dlq', generated $poison poison messages"
printf '%s\n' "$summary" | grep -q wrong_type && fail "a record no job takes"
[ -n "$pds" ] && [ "$pds" -gt 0 ] || fail "no PD updates"
[ -n "$signals" ] && [ "$signals" -gt 0 ] || fail "no market signals"
[ -n "$mkt_dlq" ] && [ "$mkt_dlq" -gt 0 ] || fail "the market's poison not counted as its own"
for what in ALERT BAND SIGNAL; do
    printf '%s\n' "$out" | grep -q "^$what " || fail "no $what line printed"
done
echo "demo_runs: ok"
