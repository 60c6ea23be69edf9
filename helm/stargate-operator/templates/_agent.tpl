{{/*
The node agent (DaemonSet per site) and node discovery: names and checks.
*/}}

{{/*
Base name of the agent's objects: <fullname>-agent.
*/}}
{{- define "stargate-operator.agentName" -}}
{{- printf "%s-agent" (include "stargate-operator.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
The agent's ServiceAccount.
*/}}
{{- define "stargate-operator.agentServiceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "stargate-operator.agentName" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The sites (namespaces) whose Nodes run an agent, one per line: agent.sites, else watchNamespaces.
*/}}
{{- define "stargate-operator.agentSites" -}}
{{- range (default .Values.watchNamespaces .Values.agent.sites) }}
{{ . }}
{{- end }}
{{- end }}

{{/*
The agent image: agent.image.repository (the operator's image when empty: it holds the agent too),
then @digest or :tag.
*/}}
{{- define "stargate-operator.agentImage" -}}
{{- $img := .Values.agent.image }}
{{- if $img.repository }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- else }}
{{- include "stargate-operator.image" . }}
{{- end }}
{{- end }}

{{/*
Name of the DaemonSet of one site. Short enough for the controller-revision-hash label (63).
*/}}
{{- define "stargate-operator.agentDaemonSetName" -}}
{{- $root := index . 0 }}{{ $site := index . 1 }}
{{- printf "%s-%s" (include "stargate-operator.agentName" $root) $site | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/*
Cross-field checks of the agent and discovery values.
*/}}
{{- define "stargate-operator.agentValidate" -}}
{{- if .Values.agent.enabled }}
{{- if not (include "stargate-operator.agentSites" . | trim) }}
{{- fail "agent.enabled=true needs agent.sites (or watchNamespaces): the namespaces of the sites whose GPU Nodes run an agent; each gets a DaemonSet on the Nodes labelled <discovery.siteLabel>=<namespace>" }}
{{- end }}
{{- if and (not .Values.agent.serviceAccount.create) (not .Values.agent.serviceAccount.name) }}
{{- fail "agent.serviceAccount.create=false needs agent.serviceAccount.name: the name of an existing ServiceAccount for the agent" }}
{{- end }}
{{- if eq (include "stargate-operator.agentServiceAccountName" .) (include "stargate-operator.serviceAccountName" .) }}
{{- fail "agent.serviceAccount.name must differ from the operator's ServiceAccount: the agent's is confined to its node's telemetry" }}
{{- end }}
{{- if and (eq .Values.agent.reportTo "prometheus") (not (and (eq .Values.operator.telemetry "prometheus") (eq .Values.operator.prometheusSeries "agent"))) }}
{{- fail "agent.reportTo=prometheus needs operator.telemetry=prometheus and operator.prometheusSeries=agent: otherwise no one reads the agents' readings and every node goes stale" }}
{{- end }}
{{- if and .Values.watchNamespaces .Values.agent.sites }}
{{- range .Values.agent.sites }}
{{- if not (has . $.Values.watchNamespaces) }}
{{- fail (printf "agent.sites names %s, which is not in watchNamespaces: no operator of this release sets its limits" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where the agents report: agent.reportTo, else prometheus when the operator reads their series.
*/}}
{{- define "stargate-operator.agentReportTo" -}}
{{- if .Values.agent.reportTo }}
{{- .Values.agent.reportTo }}
{{- else if and (eq .Values.operator.telemetry "prometheus") (eq .Values.operator.prometheusSeries "agent") }}
{{- "prometheus" }}
{{- else }}
{{- "api" }}
{{- end }}
{{- end }}

{{/*
The agents' metrics port: agent.metricsPort, else 9402 when they report to Prometheus, else 0 (off).
*/}}
{{- define "stargate-operator.agentMetricsPort" -}}
{{- if .Values.agent.metricsPort }}
{{- .Values.agent.metricsPort }}
{{- else if eq (include "stargate-operator.agentReportTo" .) "prometheus" }}
{{- 9402 }}
{{- else }}
{{- 0 }}
{{- end }}
{{- end }}

{{/*
Whether the agents' ServiceMonitor is rendered: "true" or "".
*/}}
{{- define "stargate-operator.agentServiceMonitor" -}}
{{- $on := .Values.agent.serviceMonitor.enabled }}
{{- if and .Values.agent.enabled (ne (include "stargate-operator.agentMetricsPort" .) "0") }}
{{- if eq (toString $on) "true" }}
{{- "true" }}
{{- else if and (eq (toString $on) "auto") (eq (include "stargate-operator.agentReportTo" .) "prometheus") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}
{{- "true" }}
{{- end }}
{{- end }}
{{- end }}
