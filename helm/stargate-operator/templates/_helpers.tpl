{{/*
Expand the name of the chart.
*/}}
{{- define "stargate-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "stargate-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "stargate-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "stargate-operator.labels" -}}
helm.sh/chart: {{ include "stargate-operator.chart" . }}
{{ include "stargate-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stargate
{{- end }}

{{/*
Selector labels
*/}}
{{- define "stargate-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stargate-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "stargate-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stargate-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: repository, then @digest or :tag (the appVersion when the tag is empty).
*/}}
{{- define "stargate-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The leader election's Lease (in the release namespace).
*/}}
{{- define "stargate-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "stargate-operator.fullname" . | trunc 56 | trimSuffix "-")) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
True ("true") when the operator watches every namespace (no watchNamespaces), else empty.
*/}}
{{- define "stargate-operator.clusterWide" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Cross-field checks that JSON schema cannot phrase clearly.
*/}}
{{- define "stargate-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount=%d needs leaderElection.enabled=true: without leader election every replica would reconcile and write status at once (use replicaCount=1, or enable leader election for active/standby replicas)" (int .Values.replicaCount)) }}
{{- end }}
{{- with .Values.leaderElection }}
{{- if le (int .leaseDurationSeconds) (int .renewDeadlineSeconds) }}
{{- fail (printf "leaderElection.leaseDurationSeconds (%d) must be greater than leaderElection.renewDeadlineSeconds (%d): a leader must give up before a standby may take over" (int .leaseDurationSeconds) (int .renewDeadlineSeconds)) }}
{{- end }}
{{- if le (mul 10 (int .renewDeadlineSeconds)) (mul 12 (int .retryPeriodSeconds)) }}
{{- fail (printf "leaderElection.renewDeadlineSeconds (%d) must be greater than 1.2 x leaderElection.retryPeriodSeconds (%d)" (int .renewDeadlineSeconds) (int .retryPeriodSeconds)) }}
{{- end }}
{{- end }}
{{- include "stargate-operator.validateFailover" . }}
{{- if and (eq .Values.operator.telemetry "prometheus") (not .Values.operator.prometheusUrl) }}
{{- fail "operator.telemetry=prometheus needs operator.prometheusUrl (the base URL of the Prometheus to query, e.g. http://prometheus-operated.monitoring:9090)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled=true needs metrics.service.enabled=true: the ServiceMonitor selects the metrics Service" }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the name of an existing ServiceAccount for the operator" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail (printf "metrics.port and health.port are both %d: they must differ" (int .Values.metrics.port)) }}
{{- end }}
{{- end }}

{{/*
Name of the Deployment of one replica: the first is the full name, standbys get -standby-N.
*/}}
{{- define "stargate-operator.deploymentName" -}}
{{- $root := index . 0 }}{{ $rank := index . 1 }}
{{- if eq (int $rank) 0 }}
{{- include "stargate-operator.fullname" $root }}
{{- else }}
{{- printf "%s-standby-%d" (include "stargate-operator.fullname" $root | trunc 52 | trimSuffix "-") (int $rank) }}
{{- end }}
{{- end }}

{{/*
A failover must beat the agents' fail-safe. The agents allow agent.failsafeAfter from the last
renewal of the fail-safe Lease they saw, which is at most a third of its duration before the active
replica dies; a standby takes over once the election's Lease has not changed for its duration, at
its next try (every retry period, jittered up to 2.2 x, so 4.4 x it at worst counting the try that
saw the last renewal), and renews the fail-safe Lease right after. Worst case:
  leaderElection.leaseDurationSeconds + 4.4 x leaderElection.retryPeriodSeconds
    + operator.failsafeLeaseDurationSeconds / 3  <  agent.failsafeAfter
Without leader election there is no failover; with agent.failsafeAfter 0 the agents never fall back.
*/}}
{{- define "stargate-operator.validateFailover" -}}
{{- $le := .Values.leaderElection }}
{{- $after := float64 .Values.agent.failsafeAfter }}
{{- if and $le.enabled (gt $after 0.0) }}
{{- $lease := float64 .Values.operator.failsafeLeaseDurationSeconds }}
{{- $takeover := addf (float64 $le.leaseDurationSeconds) (mulf 4.4 (float64 $le.retryPeriodSeconds)) (divf $lease 3.0) }}
{{- if ge $takeover $after }}
{{- fail (printf "a failover would trip the agents' fail-safe: leaderElection.leaseDurationSeconds (%v) + 4.4 x leaderElection.retryPeriodSeconds (%v) + operator.failsafeLeaseDurationSeconds (%v) / 3 = %.1f s must stay below agent.failsafeAfter (%v s): shorten the first three or raise agent.failsafeAfter" $le.leaseDurationSeconds $le.retryPeriodSeconds .Values.operator.failsafeLeaseDurationSeconds $takeover .Values.agent.failsafeAfter) }}
{{- end }}
{{- end }}
{{- end }}
