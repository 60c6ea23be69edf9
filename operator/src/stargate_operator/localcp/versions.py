"""Pinned versions of every external binary the project builds or uses: change them here only."""

KUBERNETES_VERSION = "v1.37.2"
# The etcd release line that Kubernetes v1.37 is built and tested against.
ETCD_VERSION = "v3.7.0"
HELM_VERSION = "v3.19.0"
