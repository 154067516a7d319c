{{/*
Names, labels and the policy file. Every template here takes the chart's own context: from
a parent chart, pass `.Subcharts.fender`.
*/}}

{{- define "fender.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fender.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "fender.policyConfigMap" -}}
{{- printf "%s-policy" (include "fender.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fender.tokenSecret" -}}
{{- .Values.control.token.existingSecret | default (printf "%s-control-token" (include "fender.fullname" .) | trunc 63 | trimSuffix "-") -}}
{{- end -}}

{{- define "fender.queueClaim" -}}
{{- .Values.queueStorage.persistentVolumeClaim.existingClaim | default (printf "%s-queues" (include "fender.fullname" .) | trunc 63 | trimSuffix "-") -}}
{{- end -}}

{{- define "fender.tokenKey" -}}
{{- if .Values.control.token.existingSecret }}{{ .Values.control.token.key }}{{ else }}token{{ end -}}
{{- end -}}

{{- define "fender.controlAddress" -}}
{{- $host := .Values.control.bindAddress -}}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end -}}
{{- printf "%s:%v" $host .Values.control.port -}}
{{- end -}}

{{- define "fender.drainDelay" -}}
{{- .Values.drain.delay | default (ternary "0s" "30s" (eq .Values.sidecar.mode "native")) -}}
{{- end -}}

{{/* Seconds in one of Fender's durations (500ms, 45s, 2m, 1h), for the grace period check. */}}
{{- define "fender.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d }}{{ divf (trimSuffix "ms" $d | float64) 1000 }}
{{- else if hasSuffix "s" $d }}{{ trimSuffix "s" $d | float64 }}
{{- else if hasSuffix "m" $d }}{{ mulf (trimSuffix "m" $d | float64) 60 }}
{{- else }}{{ mulf (trimSuffix "h" $d | float64) 3600 }}{{ end -}}
{{- end -}}

{{/* How long Fender may take to stop after SIGTERM: drain.delay + drain.timeout. */}}
{{- define "fender.stopSeconds" -}}
{{- addf (include "fender.seconds" (include "fender.drainDelay" .)) (include "fender.seconds" .Values.drain.timeout) -}}
{{- end -}}

{{- define "fender.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
The policy file: the user's policy verbatim, so that Fender's errors name its lines, then
the sections the chart owns, written from values. Checked here for what would otherwise
only show when the pod starts.
*/}}
{{- define "fender.policyFile" -}}
{{- $policy := fromYaml .Values.policy -}}
{{- if hasKey $policy "Error" -}}
{{- fail (printf "values.policy is not a YAML mapping: %s" $policy.Error) -}}
{{- end -}}
{{- $owned := list "control" "drain" -}}
{{- if .Values.redis.url }}{{ $owned = append $owned "redis" }}{{ end -}}
{{- range $section := $owned -}}
{{- if hasKey $policy $section -}}
{{- fail (printf "values.policy: leave out %q; the chart writes it from values.%s" $section $section) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.password.existingSecret (not .Values.redis.url) -}}
{{- fail "values.redis.password.existingSecret needs values.redis.url" -}}
{{- end -}}
{{ trim .Values.policy }}

# Written by the chart from its values ({{ join ", " $owned }}):
control:
  address: {{ include "fender.controlAddress" . | quote }}
  token_file: /var/run/secrets/fender/token
  {{- with .Values.control.auditLog }}
  audit_log: {{ . | quote }}
  {{- end }}
drain:
  delay: {{ include "fender.drainDelay" . }}
  timeout: {{ .Values.drain.timeout }}
{{- with .Values.redis.url }}
redis:
  url: {{ . | quote }}
  {{- if $.Values.redis.password.existingSecret }}
  password: "${file:/var/run/secrets/fender-redis/password}"
  {{- end }}
  timeout: {{ $.Values.redis.timeout }}
  prefix: {{ $.Values.redis.prefix | quote }}
  {{- with $.Values.redis.fleet }}
  fleet: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end -}}
