{{/*
RBAC rules for the namespaced resources: in a ClusterRole when the operator watches all
namespaces, in a Role per watched namespace otherwise.
*/}}
{{- define "stargate-operator.namespacedRules" -}}
# Watch every stargate.dev kind.
- apiGroups: ["stargate.dev"]
  resources: ["stargateclusters", "racks", "gpunodes", "memorypools", "memoryclaims"]
  verbs: ["get", "list", "watch"]
# Write status (the status subresource only: the operator never changes a spec).
- apiGroups: ["stargate.dev"]
  resources: ["stargateclusters/status", "racks/status", "gpunodes/status", "memorypools/status", "memoryclaims/status"]
  verbs: ["patch"]
# Events about bad references and evictions.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if and .Values.peering.enabled (not (include "stargate-operator.clusterWide" .)) }}
# kopf peering (namespaced): watch the peers, patch our keep-alive into the KopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
RBAC rules for cluster-scoped resources (always in a ClusterRole). May be empty.
*/}}
{{- define "stargate-operator.clusterRules" -}}
# kopf discovers the stargate.dev resources and follows CRD changes.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if not (include "stargate-operator.clusterWide" .) }}
# kopf follows the watched namespaces coming and going.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- if and .Values.peering.enabled (include "stargate-operator.clusterWide" .) }}
# kopf peering (cluster-wide): watch the peers, patch our keep-alive into the ClusterKopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
