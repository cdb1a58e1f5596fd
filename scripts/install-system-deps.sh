#!/usr/bin/env bash
# Installs the system packages pg-runbooks needs, only when one is missing.
# Idempotent: on a ready machine it only checks (about a second).
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
packages=("postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}" "postgresql-plperl-${PG_MAJOR}" bucardo python3
    chromium)  # chromium: the browser tests drive JupyterLab in it (Python playwright)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "system packages: all present (${packages[*]})"
    exit 0
fi

install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "system packages missing: ${missing[*]}" >&2
    echo "run as root:  sudo sh -c '$install_cmd'" >&2
    exit 1
fi

echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's package lists may be empty or stale: refresh them once, only when installing.
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's postgresql package may start a 'main' cluster; the runbooks never use it, but leave
# it as the package configured it: it is not ours to stop.
echo "system packages: installed ${missing[*]}"
