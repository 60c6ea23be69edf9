#!/usr/bin/env bash
# Install the real Prometheus server and promtool from Debian's package, once.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "[setup] installing Debian's prometheus package (server and promtool)" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a system service where systemd runs; tests start their own on loopback.
command -v prometheus >/dev/null && command -v promtool >/dev/null
