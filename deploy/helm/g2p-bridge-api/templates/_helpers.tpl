{{/*
Name of the chart, overridable with .Values.nameOverride.
*/}}
{{- define "g2p-bridge-api.name" -}}
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
{{- define "g2p-bridge-api.fullname" -}}
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
{{- define "g2p-bridge-api.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select this component's pods. Never change them after the first
install: Deployment selectors are immutable.
*/}}
{{- define "g2p-bridge-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "g2p-bridge-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end }}

{{/*
Common labels (app.kubernetes.io/* recommended labels).
*/}}
{{- define "g2p-bridge-api.labels" -}}
helm.sh/chart: {{ include "g2p-bridge-api.chart" . }}
{{ include "g2p-bridge-api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: g2p-bridge
{{- end }}

{{/*
Container image reference. global.image (set by the umbrella chart) wins over
.Values.image; the tag defaults to the chart's appVersion.
*/}}
{{- define "g2p-bridge-api.image" -}}
{{- $global := (.Values.global).image | default dict }}
{{- $repository := coalesce $global.repository .Values.image.repository }}
{{- $tag := coalesce $global.tag .Values.image.tag .Chart.AppVersion }}
{{- printf "%s:%s" $repository (toString $tag) }}
{{- end }}

{{- define "g2p-bridge-api.imagePullPolicy" -}}
{{- $global := (.Values.global).image | default dict }}
{{- coalesce $global.pullPolicy .Values.image.pullPolicy "IfNotPresent" }}
{{- end }}

{{/*
Shared settings handed down by the umbrella chart (global.g2pBridge), if any.
*/}}
{{- define "g2p-bridge-api.shared" -}}
{{- toYaml ((.Values.global).g2pBridge | default dict) }}
{{- end }}

{{/*
true when this chart must create its own ConfigMap (standalone install).
*/}}
{{- define "g2p-bridge-api.createConfigMap" -}}
{{- $shared := include "g2p-bridge-api.shared" . | fromYaml }}
{{- if not $shared.configMapName }}true{{ end }}
{{- end }}

{{- define "g2p-bridge-api.configMapName" -}}
{{- $shared := include "g2p-bridge-api.shared" . | fromYaml }}
{{- if $shared.configMapName }}
{{- tpl $shared.configMapName . }}
{{- else }}
{{- include "g2p-bridge-api.fullname" . }}
{{- end }}
{{- end }}

{{/*
true when this chart must create its own Secret: no umbrella-provided Secret
and no secret.existingSecret.
*/}}
{{- define "g2p-bridge-api.createSecret" -}}
{{- $shared := include "g2p-bridge-api.shared" . | fromYaml }}
{{- if and (not $shared.secretName) (not .Values.secret.existingSecret) }}true{{ end }}
{{- end }}

{{- define "g2p-bridge-api.secretName" -}}
{{- $shared := include "g2p-bridge-api.shared" . | fromYaml }}
{{- if $shared.secretName }}
{{- tpl $shared.secretName . }}
{{- else if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "g2p-bridge-api.fullname" . }}
{{- end }}
{{- end }}

{{- define "g2p-bridge-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "g2p-bridge-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Refuse to render a ConfigMap holding anything that looks like a credential.
Call with a dict of environment variables.
*/}}
{{- define "g2p-bridge-api.assertNoSecrets" -}}
{{- range $key, $_ := . }}
{{- if regexMatch "(?i)(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|BROKER_URL)" $key }}
{{- fail (printf "config.%s looks like a secret: move it to secret.env (or your existing Secret)" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The paths the Ingress routes: the API's routes and nothing else (no health, no metrics, no
docs unless ingress.exposeApiDocs). Exact for the G2P Connect and upload routes; Prefix for the
operator routes with ids in their path (/envelopes/{id}/status...) and the console (/console,
which signs people in itself). tests/deploy derives the
API's routes from the app's own route table and checks this list against it, both ways.
*/}}
{{- define "g2p-bridge-api.ingressPaths" -}}
- {path: /create_disbursement_envelope, pathType: Exact}
- {path: /cancel_disbursement_envelope, pathType: Exact}
- {path: /amend_disbursement_envelope, pathType: Exact}
- {path: /get_disbursement_envelope_status, pathType: Exact}
- {path: /create_disbursements, pathType: Exact}
- {path: /cancel_disbursements, pathType: Exact}
- {path: /get_disbursement_status, pathType: Exact}
- {path: /upload_mt940, pathType: Exact}
- {path: /payroll_files, pathType: Exact}
- {path: /.well-known/jwks.json, pathType: Exact}
- {path: /create_benefit_program_configuration, pathType: Exact}
- {path: /envelopes, pathType: Prefix}
- {path: /statements, pathType: Prefix}
- {path: /programs, pathType: Prefix}
- {path: /callbacks, pathType: Prefix}
- {path: /audit, pathType: Exact}
- {path: /console, pathType: Prefix}
{{- if .Values.ingress.exposeApiDocs }}
- {path: /openapi.json, pathType: Exact}
- {path: /docs, pathType: Prefix}
- {path: /redoc, pathType: Exact}
{{- end }}
{{- end }}
