#!/usr/bin/env bash
# Installs the system packages pg-runbooks needs, only when one is missing.
# Idempotent: on a ready machine it only checks (about a second).
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
packages=("postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}" "postgresql-plperl-${PG_MAJOR}" bucardo python3
    chromium  # chromium: the browser tests drive JupyterLab in it (Python playwright)
    openssh-server)  # openssh-server: one sshd per host of the network lab (`lab up --hosts`)

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
# openssh-server's maintainer script starts an sshd listening on every address of the machine;
# the lab runs its own sshd per namespace and wants none on the machine itself. When no
# policy-rc.d exists (a container without init), one refusing only `ssh` is in place meanwhile.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n[ "$1" = ssh ] && exit 101\nexit 0\n' >"$policy"
    chmod 755 "$policy"
    own_policy=true
fi
trap 'if [[ $own_policy == true ]]; then rm -f "$policy"; fi' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's postgresql package may start a 'main' cluster; the runbooks never use it, but leave
# it as the package configured it: it is not ours to stop.
echo "system packages: installed ${missing[*]}"
