#!/usr/bin/env bash
# End-to-end check on a real cluster: build the operator image, create a kind cluster, load the
# image, install the Helm chart, apply the samples (crds/samples/) and wait until the operator has
# written the status of every sample object. For a machine with a Docker engine and kind; not run
# in CI here (tests/e2e/test_kind.py runs it when both are available).
#
#   hack/kind-e2e.sh            # create the cluster, test, delete the cluster
#   KEEP=1 hack/kind-e2e.sh     # keep the cluster afterwards (kubectl --context kind-stargate-e2e ...)
#
# Environment:
#   KIND_CLUSTER     cluster name (default stargate-e2e); an existing cluster of that name is reused
#   KIND_NODE_IMAGE  kindest/node image (default: kind's own default)
#   IMAGE            image to build and load (default stargate-operator:e2e)
#   HELM             helm binary (default: `helm` on PATH, else the project's cached build)
#   TIMEOUT          seconds to wait for the statuses (default 180)
#   KEEP             1: do not delete the cluster at the end
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-stargate-e2e}"
IMAGE="${IMAGE:-stargate-operator:e2e}"
TIMEOUT="${TIMEOUT:-180}"
RELEASE=stargate
OPERATOR_NS=stargate-system
CONTEXT="kind-${CLUSTER}"

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH (this script needs a Docker engine, kind and kubectl)"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"
if [[ -z "${HELM:-}" ]]; then
  if command -v helm >/dev/null; then
    HELM=helm
  else
    PY="${ROOT}/.venv/bin/python"; [[ -x "$PY" ]] || PY=python3
    HELM="$("$PY" -c 'from stargate_operator.localcp.binaries import ensure_helm; print(ensure_helm())')" \
      || die "no helm on PATH and the project's helm could not be provided (make tools)"
  fi
fi
KUBECTL=(kubectl --context "$CONTEXT")

created=0
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "diagnostics:"
    "${KUBECTL[@]}" -n "$OPERATOR_NS" get pods -o wide >&2 || true
    "${KUBECTL[@]}" -n "$OPERATOR_NS" logs "deployment/${RELEASE}-stargate-operator" --tail=100 >&2 || true
    "${KUBECTL[@]}" get stargate -A >&2 || true
  fi
  if [[ "${KEEP:-0}" != 1 && $created == 1 ]]; then
    log "deleting cluster $CLUSTER (KEEP=1 keeps it)"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap cleanup EXIT

log "building image $IMAGE"
docker build -f "$ROOT/operator/Dockerfile" -t "$IMAGE" "$ROOT"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
  created=1
fi

log "loading $IMAGE into the cluster"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "installing the chart (release $RELEASE in $OPERATOR_NS)"
"$HELM" upgrade --install "$RELEASE" "$ROOT/helm/stargate-operator" \
  --kube-context "$CONTEXT" --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --wait --timeout 5m

log "applying the samples (crds/samples/: their namespaces, the sites, nodes, pools and claims)"
[[ -n "$(ls "$ROOT"/crds/samples/*.yaml 2>/dev/null)" ]] || die "no samples under crds/samples/"
"${KUBECTL[@]}" apply -f "$ROOT/crds/samples/"

# Every sample object must get a status for its current generation from the operator.
kinds=(stargateclusters racks gpunodes memorypools memoryclaims)
deadline=$((SECONDS + TIMEOUT))
while :; do
  missing=()
  total=0
  for kind in "${kinds[@]}"; do
    while read -r name gen observed; do
      [[ -z "$name" ]] && continue
      total=$((total + 1))
      [[ "$gen" == "$observed" ]] || missing+=("$kind/$name")
    done < <("${KUBECTL[@]}" get "$kind" -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.generation} {.status.observedGeneration}{"\n"}{end}')
  done
  (( total > 0 )) || die "no stargate objects found after applying the samples"
  [[ ${#missing[@]} -eq 0 ]] && break
  (( SECONDS < deadline )) || die "no current status after ${TIMEOUT}s on: ${missing[*]}"
  sleep 3
done
log "every sample object ($total) has a current status"
"${KUBECTL[@]}" get stargateclusters,racks -A

log "scraping the operator's metrics through the API server's service proxy"
metrics="$("${KUBECTL[@]}" get --raw \
  "/api/v1/namespaces/${OPERATOR_NS}/services/http:${RELEASE}-stargate-operator-metrics:metrics/proxy/metrics")"
grep -q '^stargate_' <<<"$metrics" || die "the metrics endpoint serves no stargate_ series"

log "upgrading the release in place (helm upgrade --reuse-values)"
"$HELM" upgrade "$RELEASE" "$ROOT/helm/stargate-operator" --kube-context "$CONTEXT" \
  --namespace "$OPERATOR_NS" --reuse-values --wait --timeout 5m

log "e2e: OK"
