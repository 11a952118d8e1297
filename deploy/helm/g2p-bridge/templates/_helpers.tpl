{{- define "g2p-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else the release name when it contains the chart
name, else "<release>-<chart>".
*/}}
{{- define "g2p-bridge.fullname" -}}
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

{{- define "g2p-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "g2p-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "g2p-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "g2p-bridge.labels" -}}
helm.sh/chart: {{ include "g2p-bridge.chart" . }}
{{ include "g2p-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: g2p-bridge
{{- end }}

{{- define "g2p-bridge.image" -}}
{{- $image := .Values.global.image | default dict }}
{{- printf "%s:%s" (required "global.image.repository is required" $image.repository) (toString (coalesce $image.tag .Chart.AppVersion)) }}
{{- end }}

{{/* Name of the shared ConfigMap every component loads (global.g2pBridge.configMapName). */}}
{{- define "g2p-bridge.configMapName" -}}
{{- tpl (required "global.g2pBridge.configMapName is required" .Values.global.g2pBridge.configMapName) . }}
{{- end }}

{{/* Name of the shared Secret every component loads (global.g2pBridge.secretName). */}}
{{- define "g2p-bridge.secretName" -}}
{{- tpl (required "global.g2pBridge.secretName is required" .Values.global.g2pBridge.secretName) . }}
{{- end }}

{{/* Name of the hook-scoped copies used by the migration Job. */}}
{{- define "g2p-bridge.migrationName" -}}
{{- printf "%s-migrate" (include "g2p-bridge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "g2p-bridge.assertNoSecrets" -}}
{{- range $key, $_ := . }}
{{- if regexMatch "(?i)(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|BROKER_URL)" $key }}
{{- fail (printf "config.%s looks like a secret: move it to secret.env (or your existing Secret)" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* ConfigMap data: non-empty values, as strings. */}}
{{- define "g2p-bridge.configData" -}}
{{- include "g2p-bridge.assertNoSecrets" .Values.config }}
{{- range $key, $value := .Values.config }}
{{- if ne (toString $value) "" }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret stringData: non-empty values, as strings. */}}
{{- define "g2p-bridge.secretData" -}}
{{- range $key, $value := .Values.secret.env }}
{{- if ne (toString $value) "" }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}
