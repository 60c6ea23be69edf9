#!/usr/bin/env bash
# A single-node Kubernetes on this machine, the one tests/e2e/test_node.py uses: the local control
# plane in node mode, containerd, a kubelet, kube-controller-manager, kube-scheduler, the cluster DNS
# and the operator image built from operator/Dockerfile (see docs/development/real-node.md).
# Needs root. Runs in the foreground until Ctrl-C, then stops everything and undoes its rules/mounts.
#
#   sudo hack/real-node.sh --label nvidia.com/gpu.present=true
#   export KUBECONFIG=<the path it prints>
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/hack/install-node-deps.sh"
exec "${PYTHON:-$root/.venv/bin/python}" -m stargate_operator.localcp.node "$@"
