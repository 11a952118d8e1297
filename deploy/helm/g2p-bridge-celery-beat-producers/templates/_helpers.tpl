{{/*
Name of the chart, overridable with .Values.nameOverride.
*/}}
{{- define "g2p-bridge-celery-beat-producers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name for the objects of this release.
- fullnameOverride wins;
- a release whose name already contains the chart name uses the release name;
- a chart whose name starts with "<release>-" (release "g2p-bridge", chart
  "g2p-bridge-api") uses the chart name, avoiding "g2p-bridge-g2p-bridge-api";
- otherwise "<release>-<chart>".
*/}}
{{- define "g2p-bridge-celery-beat-producers.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else if hasPrefix (printf "%s-" .Release.Name) $name }}
{{- $name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"name-version" as used by the helm.sh/chart label.
*/}}
{{- define "g2p-bridge-celery-beat-producers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select this component's pods. Never change them after the first
install: Deployment selectors are immutable.
*/}}
{{- define "g2p-bridge-celery-beat-producers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "g2p-bridge-celery-beat-producers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: beat
{{- end }}

{{/*
Common labels (app.kubernetes.io/* recommended labels).
*/}}
{{- define "g2p-bridge-celery-beat-producers.labels" -}}
helm.sh/chart: {{ include "g2p-bridge-celery-beat-producers.chart" . }}
{{ include "g2p-bridge-celery-beat-producers.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: g2p-bridge
{{- end }}

{{/*
Container image reference. global.image (set by the umbrella chart) wins over
.Values.image; the tag defaults to the chart's appVersion.
*/}}
{{- define "g2p-bridge-celery-beat-producers.image" -}}
{{- $global := (.Values.global).image | default dict }}
{{- $repository := coalesce $global.repository .Values.image.repository }}
{{- $tag := coalesce $global.tag .Values.image.tag .Chart.AppVersion }}
{{- printf "%s:%s" $repository (toString $tag) }}
{{- end }}

{{- define "g2p-bridge-celery-beat-producers.imagePullPolicy" -}}
{{- $global := (.Values.global).image | default dict }}
{{- coalesce $global.pullPolicy .Values.image.pullPolicy "IfNotPresent" }}
{{- end }}

{{/*
Shared settings handed down by the umbrella chart (global.g2pBridge), if any.
*/}}
{{- define "g2p-bridge-celery-beat-producers.shared" -}}
{{- toYaml ((.Values.global).g2pBridge | default dict) }}
{{- end }}

{{/*
true when this chart must create its own ConfigMap (standalone install).
*/}}
{{- define "g2p-bridge-celery-beat-producers.createConfigMap" -}}
{{- $shared := include "g2p-bridge-celery-beat-producers.shared" . | fromYaml }}
{{- if not $shared.configMapName }}true{{ end }}
{{- end }}

{{- define "g2p-bridge-celery-beat-producers.configMapName" -}}
{{- $shared := include "g2p-bridge-celery-beat-producers.shared" . | fromYaml }}
{{- if $shared.configMapName }}
{{- tpl $shared.configMapName . }}
{{- else }}
{{- include "g2p-bridge-celery-beat-producers.fullname" . }}
{{- end }}
{{- end }}

{{/*
true when this chart must create its own Secret: no umbrella-provided Secret
and no secret.existingSecret.
*/}}
{{- define "g2p-bridge-celery-beat-producers.createSecret" -}}
{{- $shared := include "g2p-bridge-celery-beat-producers.shared" . | fromYaml }}
{{- if and (not $shared.secretName) (not .Values.secret.existingSecret) }}true{{ end }}
{{- end }}

{{- define "g2p-bridge-celery-beat-producers.secretName" -}}
{{- $shared := include "g2p-bridge-celery-beat-producers.shared" . | fromYaml }}
{{- if $shared.secretName }}
{{- tpl $shared.secretName . }}
{{- else if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "g2p-bridge-celery-beat-producers.fullname" . }}
{{- end }}
{{- end }}

{{- define "g2p-bridge-celery-beat-producers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "g2p-bridge-celery-beat-producers.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Refuse to render a ConfigMap holding anything that looks like a credential.
Call with a dict of environment variables.
*/}}
{{- define "g2p-bridge-celery-beat-producers.assertNoSecrets" -}}
{{- range $key, $_ := . }}
{{- if regexMatch "(?i)(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|BROKER_URL)" $key }}
{{- fail (printf "config.%s looks like a secret: move it to secret.env (or your existing Secret)" $key) }}
{{- end }}
{{- end }}
{{- end }}
