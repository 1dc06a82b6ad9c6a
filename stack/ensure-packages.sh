#!/usr/bin/env bash
# Install the Debian packages chatfleet needs, if their commands are missing.
# Usage: stack/ensure-packages.sh COMMAND=PACKAGE ...
# As root: apt-get installs what is missing. Otherwise: one line saying what to install.
set -euo pipefail

missing=()
for pair in "$@"; do
  cmd=${pair%%=*}
  pkg=${pair#*=}
  if [ "$cmd" = "python3-venv" ]; then
    # Debian splits venv/ensurepip out of python3.
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=("$pkg")
  elif ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
    missing+=("$pkg")
  fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "chatfleet needs: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
