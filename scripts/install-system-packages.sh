#!/usr/bin/env bash
# Installs the Debian packages the test bed and the tests need, only when one is missing.
# PostgreSQL 15 (server binaries), unixODBC with psqlODBC and FreeTDS (pyodbc's drivers), and the
# headers pyodbc builds against when no wheel fits. Go is needed once, to build the control plane.
set -euo pipefail
pkgs=(postgresql-15 postgresql-client-15 unixodbc unixodbc-dev odbc-postgresql tdsodbc)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "[setup] installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! odbcinst -q -d 2>/dev/null | grep -q "PostgreSQL Unicode"; then
  echo "the ODBC driver 'PostgreSQL Unicode' is not registered in /etc/odbcinst.ini" >&2
  exit 1
fi
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  echo "[setup] warning: no Go toolchain; the control plane can only come from KUBEBUILDER_ASSETS or the cache" >&2
fi
