{{/*
RBAC rules for the namespaced resources: in a ClusterRole when the operator watches all
namespaces, in a Role per watched namespace otherwise.
*/}}
{{- define "stargate-operator.namespacedRules" -}}
# The engine lists and watches every stargate.dev kind (its informers).
- apiGroups: ["stargate.dev"]
  resources: ["stargateclusters", "racks", "powerdomains", "gpunodes", "memorypools", "memoryclaims", "gridevents", "powerlimitslices"]
  verbs: ["list", "watch"]
# The limits travel in PowerLimitSlices, which only the operator writes: server-side apply, a patch
# that creates an absent slice (so the API server also asks for create; its audit log records the
# patch). A slice left without racks is emptied, never deleted.
- apiGroups: ["stargate.dev"]
  resources: ["powerlimitslices"]
  verbs: ["create", "patch"]
# It writes status only, with merge patches on the status subresource: never a spec.
- apiGroups: ["stargate.dev"]
  resources: ["stargateclusters/status", "racks/status", "powerdomains/status", "gpunodes/status", "memorypools/status", "memoryclaims/status", "gridevents/status", "powerlimitslices/status"]
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
{{- if and .Values.peering.enabled (not (include "stargate-operator.clusterWide" .)) }}
# Peering (namespaced): keep-alives are merge patches on the KopfPeering, which the operator
# creates when it is missing (a custom resource cannot be installed with its own CRD in one release).
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["create", "patch"]
{{- end }}
{{- end }}

{{/*
RBAC rules for cluster-scoped resources (always in a ClusterRole). May be empty.
*/}}
{{- define "stargate-operator.clusterRules" -}}
{{- if and .Values.peering.enabled (include "stargate-operator.clusterWide" .) }}
# Peering (cluster-wide): keep-alives are merge patches on the ClusterKopfPeering, which the
# operator creates when it is missing.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["create", "patch"]
{{- end }}
{{- end }}
