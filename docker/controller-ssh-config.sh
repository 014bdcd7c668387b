#!/bin/sh
# Controller entrypoint: gather the hosts' published keys into known_hosts,
# write an ssh_config and a hostfile under /root/.ssh, then run the command.
set -eu
keys=${SSHDEPLOY_KEYS:-/keys}
hosts=${SSHDEPLOY_HOSTS:-node1 node2 node3 node4}
mkdir -p /root/.ssh
: >/root/.ssh/known_hosts
: >/root/hostfile
for h in $hosts; do
    waited=0
    while [ ! -s "$keys/known_hosts.d/$h" ]; do
        [ "$waited" -lt 600 ] || { echo "no host key from $h" >&2; exit 2; }
        sleep 0.1
        waited=$((waited + 1))
    done
    cat "$keys/known_hosts.d/$h" >>/root/.ssh/known_hosts
    echo "root@$h" >>/root/hostfile
done
cp "$keys/client_key" /root/.ssh/id_ed25519
chmod 600 /root/.ssh/id_ed25519
cat >/root/.ssh/config <<CFG
Host *
    User root
    IdentityFile /root/.ssh/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking yes
    BatchMode yes
CFG
exec "$@"
