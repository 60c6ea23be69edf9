{{/*
RBAC rules for the namespaced resources: in a ClusterRole when the operator watches all
namespaces, in a Role per watched namespace otherwise.
*/}}
{{- define "stargate-operator.namespacedRules" -}}
# The engine lists and watches every stargate.dev kind (its informers).
- apiGroups: ["stargate.dev"]
  resources: {{ include "stargate-operator.kindResources" . }}
  verbs: ["list", "watch"]
# It writes status only, with merge patches on the status subresource: never a spec.
- apiGroups: ["stargate.dev"]
  resources: {{ include "stargate-operator.statusResources" . }}
  verbs: ["patch"]
# Events about bad references and evictions (core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The fail-safe Lease of each site namespace, renewed by merge patches (made by
# the first renewal that finds none): node agents fall back to safe limits when it is not renewed.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
RBAC rules for cluster-scoped resources (always in a ClusterRole). May be empty.
*/}}
{{- define "stargate-operator.clusterRules" -}}
{{- end }}
