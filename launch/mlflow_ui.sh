#!/usr/bin/env bash
# Browse and compare runs: launch/mlflow_ui.sh [PORT]  ->  http://127.0.0.1:PORT
# Bound to localhost; reach it from elsewhere with ssh -L PORT:127.0.0.1:PORT.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
exec mlflow ui --backend-store-uri "${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host 127.0.0.1 --port "${1:-5000}"
