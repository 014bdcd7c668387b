#!/bin/sh
# sshdeploy/testbed/provision.sh - the one provisioning source of the sshdeploy test beds.
#
# Used by both beds:
#   * the local namespace bed (python -m sshdeploy.testbed), which calls the
#     `client-key`, `authorize` and `host` subcommands, and
#   * the docker-compose bed (docker/Dockerfile, docker-compose.yml), whose
#     `keygen` service runs `client-key` and whose hosts run `container`.
# so both get the same sshd_config (one template, below), the same kind of
# ed25519 host key and the same key-only root login. Each host has its own
# /tmp, /var/tmp, ~/.cache and /etc/profile.d: a container by nature, a
# namespace host through private mounts (sshd.py, private_disk_argv).
#
# Subcommands (POSIX sh, needs ssh-keygen; `container` also needs sshd):
#   client-key DIR
#       Create DIR/client_key (+ .pub), ed25519, no passphrase, if missing.
#   authorize PUBKEY AUTHORIZED_KEYS
#       Install PUBKEY as the only line of AUTHORIZED_KEYS.
#   host-key DIR
#       Create DIR/ssh_host_ed25519_key (+ .pub) if missing.
#   sshd-config OUT LISTEN_ADDRESS AUTHORIZED_KEYS HOST_KEY PID_FILE ["Key Value"...]
#       Write the sshd_config template to OUT. Extra "Key Value" lines go
#       first, so they win over the template (sshd keeps the first value).
#   host DIR LISTEN_ADDRESS AUTHORIZED_KEYS ["Key Value"...]
#       host-key DIR + sshd-config DIR/sshd_config (pid file DIR/sshd.pid).
#   known-host NAMES PUBKEY_FILE
#       Print one known_hosts line: "NAMES keytype key" (NAMES e.g. node1,10.213.7.11).
#   bed-address PREFIX
#       Print this machine's first IPv4 address that starts with PREFIX
#       (e.g. "10.213.7."), from `ip -o -4 addr show`; nothing if none.
#   container
#       Docker entrypoint of a bed host: wait for $SSHDEPLOY_KEYS/client_key.pub
#       (written by the keygen service), authorize it, create a host key,
#       publish "$(hostname),<address> <key>" in $SSHDEPLOY_KEYS/known_hosts.d/
#       (<address>: the bed-address of $SSHDEPLOY_BED_NET, default "10.213.7.",
#       not the private network's), and exec sshd in the foreground.
set -eu

die() {
    echo "provision.sh: $*" >&2
    exit 2
}

client_key() {
    dir=$1
    mkdir -p "$dir"
    if [ ! -f "$dir/client_key" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "sshdeploy-testbed-client" -f "$dir/client_key"
    fi
    chmod 600 "$dir/client_key"
}

authorize() {
    pub=$1
    out=$2
    [ -f "$pub" ] || die "authorize: no public key $pub"
    mkdir -p "$(dirname "$out")"
    cat "$pub" >"$out.tmp"
    chmod 644 "$out.tmp"
    mv "$out.tmp" "$out"
}

host_key() {
    dir=$1
    mkdir -p "$dir"
    if [ ! -f "$dir/ssh_host_ed25519_key" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "sshdeploy-testbed-host" -f "$dir/ssh_host_ed25519_key"
    fi
    chmod 600 "$dir/ssh_host_ed25519_key"
}

# The template. OpenSSH's defaults are kept for everything not listed here
# (notably MaxStartups 10:30:100 and MaxSessions 10), as on users' servers.
sshd_config() {
    out=$1
    listen=$2
    authorized_keys=$3
    host_key=$4
    pid_file=$5
    shift 5
    {
        echo "# Written by sshdeploy/testbed/provision.sh - do not edit, regenerate."
        if [ "$#" -gt 0 ]; then
            echo "# Extra options (first value wins in sshd_config):"
            for line in "$@"; do
                echo "$line"
            done
        fi
        cat <<EOF
ListenAddress $listen
Port 22
AddressFamily inet
HostKey $host_key
PidFile $pid_file
AuthorizedKeysFile $authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
StrictModes no
UseDNS no
LogLevel INFO
X11Forwarding no
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_*
# The bed's hosts share this machine's disk: a login shell that runs `pyenv init`
# (root's .bashrc here) would queue behind one global rehash lock, 60 s each.
SetEnv PYENV_REHASH_TIMEOUT=1
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    } >"$out.tmp"
    mv "$out.tmp" "$out"
}

host() {
    dir=$1
    listen=$2
    authorized_keys=$3
    shift 3
    host_key "$dir"
    sshd_config "$dir/sshd_config" "$listen" "$authorized_keys" \
        "$dir/ssh_host_ed25519_key" "$dir/sshd.pid" "$@"
}

known_host() {
    names=$1
    pub=$2
    [ -f "$pub" ] || die "known-host: no public key $pub"
    # keep "type key", drop the comment
    set -- $(cat "$pub")
    echo "$names $1 $2"
}

bed_address() {
    ip -o -4 addr show | awk -v p="$1" '{ a = $4; sub("/.*", "", a) }
        index(a, p) == 1 { print a; exit }'
}

container() {
    keys=${SSHDEPLOY_KEYS:-/keys}
    conf=/etc/ssh/sshdeploy
    mkdir -p /run/sshd "$conf" "$keys/known_hosts.d"
    waited=0
    while [ ! -f "$keys/client_key.pub" ]; do
        [ "$waited" -lt 600 ] || die "container: $keys/client_key.pub did not appear (keygen service?)"
        sleep 0.1
        waited=$((waited + 1))
    done
    authorize "$keys/client_key.pub" "$conf/authorized_keys"
    host "$conf" 0.0.0.0 "$conf/authorized_keys"
    name=$(hostname)
    address=$(bed_address "${SSHDEPLOY_BED_NET:-10.213.7.}")
    known_host "$name${address:+,$address}" "$conf/ssh_host_ed25519_key.pub" \
        >"$keys/known_hosts.d/$name"
    exec /usr/sbin/sshd -D -e -f "$conf/sshd_config"
}

[ "$#" -ge 1 ] || die "usage: provision.sh {client-key|authorize|host-key|sshd-config|host|known-host|bed-address|container} ARGS..."
cmd=$1
shift
case "$cmd" in
    client-key) [ "$#" -eq 1 ] || die "usage: client-key DIR"; client_key "$@" ;;
    authorize) [ "$#" -eq 2 ] || die "usage: authorize PUBKEY AUTHORIZED_KEYS"; authorize "$@" ;;
    host-key) [ "$#" -eq 1 ] || die "usage: host-key DIR"; host_key "$@" ;;
    sshd-config)
        [ "$#" -ge 5 ] || die "usage: sshd-config OUT LISTEN AUTHORIZED_KEYS HOST_KEY PID_FILE [LINE...]"
        sshd_config "$@" ;;
    host) [ "$#" -ge 3 ] || die "usage: host DIR LISTEN AUTHORIZED_KEYS [LINE...]"; host "$@" ;;
    known-host) [ "$#" -eq 2 ] || die "usage: known-host NAMES PUBKEY_FILE"; known_host "$@" ;;
    bed-address) [ "$#" -eq 1 ] || die "usage: bed-address PREFIX"; bed_address "$@" ;;
    container) container ;;
    *) die "unknown subcommand '$cmd'" ;;
esac
