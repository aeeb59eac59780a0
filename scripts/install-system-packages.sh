#!/usr/bin/env bash
# Installs the Debian packages the test bed and the tests need, only when one is missing.
# PostgreSQL 15 (server binaries), unixODBC with psqlODBC and FreeTDS (pyodbc's drivers), and the
# headers pyodbc builds against when no wheel fits; Prometheus (for `promtool`, which checks the chart's
# alert rules and the operator's metrics) and Lua 5.1 (which runs the Argo CD health check, as Argo CD
# does). Go is needed once, to build the control plane and the test tools (kstatus, kubeconform).
set -euo pipefail
pkgs=(postgresql-15 postgresql-client-15 unixodbc unixodbc-dev odbc-postgresql tdsodbc prometheus lua5.1)
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
  # Only promtool is wanted of the prometheus package: no service is started by the install (policy-rc.d
  # exit 101, as in container builds), unless the machine already has a policy of its own.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if ! odbcinst -q -d 2>/dev/null | grep -q "PostgreSQL Unicode"; then
  echo "the ODBC driver 'PostgreSQL Unicode' is not registered in /etc/odbcinst.ini" >&2
  exit 1
fi
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  echo "[setup] warning: no Go toolchain; the control plane can only come from KUBEBUILDER_ASSETS or the cache" >&2
fi
