#!/usr/bin/env bash
# A local Kubernetes control plane (etcd + kube-apiserver on loopback, RBAC on, CRDs installed).
#
#   hack/control-plane.sh start              foreground until Ctrl-C
#   hack/control-plane.sh start --detach     background; prints the kubeconfig path
#   hack/control-plane.sh stop | status | kubeconfig
#   hack/control-plane.sh binaries           provide kube-apiserver, etcd, kubectl, helm; print paths
#   hack/control-plane.sh --help             all options
#
#   export KUBECONFIG=$(hack/control-plane.sh start --detach)
#
# The binaries come from KUBEBUILDER_ASSETS, the cache under ~/.cache/stargate-operator, or a build
# from their Go modules on first use (see operator/src/stargate_operator/localcp/binaries.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
  echo "error: $python not found; run 'make setup' first (or set PYTHON)" >&2
  exit 1
fi
exec "$python" -m stargate_operator.localcp.command "$@"
