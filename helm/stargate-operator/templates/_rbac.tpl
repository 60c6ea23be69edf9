{{/*
RBAC rules for the namespaced resources: in a ClusterRole when the operator watches all
namespaces, in a Role per watched namespace otherwise.
*/}}
{{- define "stargate-operator.namespacedRules" -}}
# The engine lists and watches every kind of the group (its informers).
- apiGroups: [{{ include "stargate-operator.group" . | quote }}]
  resources: {{ include "stargate-operator.kindResources" . }}
  verbs: ["list", "watch"]
# The limits travel in PowerLimitSlices, which only the operator writes: an absent slice is created
# by server-side apply (a patch that creates, so the API server also asks for create; its audit log
# records the patch), a held one is rewritten whole by an update carrying the resourceVersion held.
# A slice left without racks is emptied, never deleted.
- apiGroups: [{{ include "stargate-operator.group" . | quote }}]
  resources: [{{ include "stargate-operator.plural" "PowerLimitSlice" | quote }}]
  verbs: ["create", "patch", "update"]
# It writes status only, with merge patches on the status subresource: never a spec.
- apiGroups: [{{ include "stargate-operator.group" . | quote }}]
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
