{{- define "example-bank.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else the release name when it contains the chart
name, else "<release>-<chart>". Components append "-api", "-worker", "-migrate".
*/}}
{{- define "example-bank.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "example-bank.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "api"). */}}
{{- define "example-bank.selectorLabels" -}}
app.kubernetes.io/name: {{ include "example-bank.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "api"). */}}
{{- define "example-bank.labels" -}}
helm.sh/chart: {{ include "example-bank.chart" .root }}
{{ include "example-bank.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: example-bank
{{- end }}

{{- define "example-bank.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (coalesce .Values.image.tag .Chart.AppVersion)) }}
{{- end }}

{{- define "example-bank.secretName" -}}
{{- default (include "example-bank.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "example-bank.migrationName" -}}
{{- printf "%s-migrate" (include "example-bank.fullname" .) }}
{{- end }}

{{- define "example-bank.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "example-bank.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "example-bank.assertNoSecrets" -}}
{{- range $key, $_ := . }}
{{- if regexMatch "(?i)(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|BROKER_URL)" $key }}
{{- fail (printf "config.%s looks like a secret: move it to secret.env (or your existing Secret)" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "example-bank.configData" -}}
{{- include "example-bank.assertNoSecrets" .Values.config }}
{{- range $key, $value := .Values.config }}
{{- if ne (toString $value) "" }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "example-bank.secretData" -}}
{{- range $key, $value := .Values.secret.env }}
{{- if ne (toString $value) "" }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Checksum annotations rolling the pods when chart-managed settings change. */}}
{{- define "example-bank.checksums" -}}
checksum/config: {{ include "example-bank.configData" . | sha256sum }}
{{- if not .Values.secret.existingSecret }}
checksum/secret: {{ include "example-bank.secretData" . | sha256sum }}
{{- end }}
{{- end }}
