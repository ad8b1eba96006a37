#!/usr/bin/env bash
# systemd/riskflowd.service passes `systemd-analyze verify` with no complaint at all (its
# stderr must be empty): every directive known to this systemd, the unit well-formed. The
# unit names /usr/bin/riskflowd; verify checks that the binary exists, so a copy of the unit
# points at the built one.
# usage: systemd_unit_verifies.sh RISKFLOWD
set -euo pipefail
daemon="$(readlink -f "$1")"
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found (Debian: systemd)"; exit 1; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s#/usr/bin/riskflowd#$daemon#g" systemd/riskflowd.service >"$dir/riskflowd.service"
grep -q '^Type=notify$' "$dir/riskflowd.service" || { echo "the unit is not Type=notify"; exit 1; }
grep -q '^WatchdogSec=' "$dir/riskflowd.service" || { echo "the unit sets no WatchdogSec"; exit 1; }
err="$(systemd-analyze verify "$dir/riskflowd.service" 2>&1 >/dev/null)" || {
  echo "systemd-analyze verify failed:"; echo "$err"; exit 1; }
if [[ -n "$err" ]]; then
  echo "systemd-analyze verify complained:"; echo "$err"; exit 1
fi
echo "systemd-analyze verify: riskflowd.service OK ($(systemd-analyze --version | head -n1))"
