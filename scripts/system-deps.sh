#!/usr/bin/env bash
# System packages the tests and demos use: Graphviz's `dot` (SVG graphs), Chromium (browser
# tests of JupyterLab) and PostgreSQL's server binaries (the SQL tests start their own server).
# Installed from Debian's archive when missing; nothing here downloads a browser of its own.
# Skipped quietly where apt-get is not available.
set -euo pipefail
need=()
command -v dot >/dev/null 2>&1 || need+=(graphviz)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: apt-get not found; please install: ${need[*]}" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system-deps: not root and no sudo; please install: ${need[*]}" >&2
    exit 0
  fi
fi
echo "system-deps: installing ${need[*]} from Debian" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" fonts-liberation >/dev/null
