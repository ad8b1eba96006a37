#!/usr/bin/env bash
# Builds .venv-train (the training venv) from tools/train/requirements-train.txt. The models
# are trained with it: .venv-train/bin/python tools/train/train_credit.py, train_market.py,
# train_fraud.py. Not part of the tests (CI never installs torch).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python3 -m venv "$ROOT/.venv-train"
"$ROOT/.venv-train/bin/python" -m pip install -q --disable-pip-version-check \
  -r "$ROOT/tools/train/requirements-train.txt"
echo "setup: .venv-train ready ($("$ROOT/.venv-train/bin/python" --version))"
