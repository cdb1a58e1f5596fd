"""One sshd per host of the hosts lab, each in its own network and mount namespace.

The host's private file tree: tmpfs mounts, seen only by the host's sshd and everything
started through it (PostgreSQL included), over /srv (the servers' files), /tmp and the homes
of root, postgres and bucardo. A file written on the wrong host is simply not there, and
each host has its own ~/.ssh like a real machine.

Keys live in DIR/ssh (root's, 0700): the operator's client key, the hosts' client key (put in
every lab user's ~/.ssh on every host, so that hosts reach each other: the primary's
archive_command to the archive host), one host key per sshd, known_hosts with every host by
name and address, and an ssh_config naming the hosts.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from runbook_lib.host import LOCAL

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
LAB_USERS = ("root", "postgres", "bucardo")

# Runs as root inside the host's fresh mount namespace, then becomes its sshd (same pid).
# Every input is read before the private mounts hide where it came from (DIR may be under /tmp
# or /root). $1 authorized_keys, $2 sshd_config, $3 host key, $4 hosts' client key,
# $5 hosts' ssh_config, $6 known_hosts, $7 size of /srv; then user:home pairs. sshd logs to
# stderr (-e): the lab's log file, opened before the mounts.
START_SCRIPT = r"""
set -eu
authorized=$(cat "$1") config=$(cat "$2") hostkey=$(cat "$3") key=$(cat "$4")
sshconfig=$(cat "$5") known=$(cat "$6") size=$7
shift 7
mount -t tmpfs -o "mode=0755,size=$size" lab-srv /srv
mount -t tmpfs -o mode=1777,size=256m lab-tmp /tmp
umask 077
mkdir -m 0700 /srv/.sshd
printf '%s\n' "$config" >/srv/.sshd/sshd_config
printf '%s\n' "$hostkey" >/srv/.sshd/ssh_host_ed25519_key
printf '%s\n' "$authorized" >/srv/.sshd/authorized_keys
chmod 0755 /srv/.sshd
chmod 0644 /srv/.sshd/authorized_keys
install -d -m 0700 -o postgres -g postgres /srv/postgresql /srv/archive
install -d -m 0711 /srv/bucardo
for pair in "$@"; do
    user=${pair%%:*} home=${pair#*:}
    group=$(id -g "$user")
    mount -t tmpfs -o "mode=0700,uid=$(id -u "$user"),gid=$group,size=64m" lab-home "$home"
    install -d -m 0700 -o "$user" -g "$group" "$home/.ssh"
    printf '%s\n' "$key" >"$home/.ssh/id_ed25519"
    printf '%s\n' "$sshconfig" >"$home/.ssh/config"
    printf '%s\n' "$known" >"$home/.ssh/known_hosts"
    chown "$user:$group" "$home/.ssh/id_ed25519" "$home/.ssh/config" "$home/.ssh/known_hosts"
done
exec /usr/sbin/sshd -D -e -f /srv/.sshd/sshd_config
"""

PRIVATE_CONFIG = "/srv/.sshd/sshd_config"
PRIVATE_HOST_KEY = "/srv/.sshd/ssh_host_ed25519_key"


def keygen(path: Path, comment: str) -> None:
    if not path.exists():
        LOCAL.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def public_key(path: Path) -> str:
    return Path(f"{path}.pub").read_text().strip()


def sshd_config(address: str) -> str:
    return "\n".join(
        [
            f"ListenAddress {address}",
            "Port 22",
            f"HostKey {PRIVATE_HOST_KEY}",
            "PidFile none",
            "AuthorizedKeysFile /srv/.sshd/authorized_keys",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM yes",  # without PAM, sshd refuses accounts without a password (postgres)
            "PrintMotd no",
            "MaxSessions 100",  # one control master carries many parallel commands
            "MaxStartups 100:30:200",
            "LogLevel INFO",
            "",
        ]
    )


def ssh_config(addresses: dict[str, str], identity: str, known_hosts: str) -> str:
    """Names of the lab's hosts, and how to check and log in to them."""
    lines = []
    for name, address in addresses.items():
        lines += [f"Host {name}", f"    HostName {address}"]
    lines += [
        f"Host {' '.join([*addresses, *addresses.values()])}",
        f"    IdentityFile {identity}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {known_hosts}",
        "    StrictHostKeyChecking yes",
        "    BatchMode yes",
        "",
    ]
    return "\n".join(lines)


def known_hosts(host_keys: dict[tuple[str, str], str]) -> str:
    """One line per host, under its name and its address: `name,address type key`."""
    lines = []
    for (name, address), key in host_keys.items():
        kind, blob = key.split()[:2]
        lines.append(f"{name},{address} {kind} {blob}")
    return "\n".join(lines) + "\n"


def user_homes() -> list[str]:
    """`user:home` for the lab's users that exist here and have a home directory."""
    pairs = []
    for user in LAB_USERS:
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            continue
        if os.path.isdir(home):
            pairs.append(f"{user}:{home}")
    return pairs


def start(
    netns: str,
    *,
    authorized_keys: Path,
    config: Path,
    host_key: Path,
    hosts_key: Path,
    hosts_ssh_config: Path,
    known_hosts_file: Path,
    srv_size: str,
    log_file: Path,
) -> int:
    """Start the host's sshd in a new mount namespace inside `netns`; its pid."""
    if not PRIVSEP_DIR.is_dir():
        LOCAL.make_dir(PRIVSEP_DIR, mode=0o755)
    argv = [
        "ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
        "sh", "-c", START_SCRIPT, "sh", str(authorized_keys), str(config), str(host_key),
        str(hosts_key), str(hosts_ssh_config), str(known_hosts_file), srv_size, *user_homes(),
    ]  # fmt: skip
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
        )
    return proc.pid  # ip netns exec, unshare and sh exec: this pid becomes sshd's
