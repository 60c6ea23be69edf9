#!/usr/bin/env bash
# Install what the single-node Kubernetes of tests/e2e needs from Debian's packages, once:
# containerd and runc (the container runtime), the CNI plugins (bridge, host-local, loopback),
# iptables (the node's service and forward rules), debootstrap (the images' Debian base) and
# docker.io (BuildKit and the `docker` client that build operator/Dockerfile), gcc (the pause image).
# Nothing here is pulled from a container registry.
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/docker ] && [ -x /usr/sbin/dockerd ] || need+=(docker.io)
command -v gcc >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/libc.a -o -e /usr/lib/aarch64-linux-gnu/libc.a ] \
  || need+=(gcc libc6-dev)  # the pause image: a static C program of a few lines
command -v ip >/dev/null || need+=(iproute2)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "[setup] installing Debian packages for the test node: ${need[*]}" >&2
$SUDO apt-get update -qq >/dev/null
# The tests start their own daemons (where systemd runs, the packages start theirs too; unused).
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends \
  "${need[@]}" >/dev/null
[ -x /usr/lib/cni/bridge ] && command -v containerd >/dev/null && command -v runc >/dev/null
