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

{{- define "fender.tokenKey" -}}
{{- if .Values.control.token.existingSecret }}{{ .Values.control.token.key }}{{ else }}token{{ end -}}
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
{{- range $section := list "control" "drain" -}}
{{- if hasKey $policy $section -}}
{{- fail (printf "values.policy: leave out %q; the chart writes it from values.%s" $section $section) -}}
{{- end -}}
{{- end -}}
{{- $delay := .Values.drain.delay | default (ternary "0s" "30s" (eq .Values.sidecar.mode "native")) -}}
{{ trim .Values.policy }}

# Written by the chart from its values (control, drain):
control:
  address: 0.0.0.0:{{ .Values.control.port }}
  token_file: /var/run/secrets/fender/token
  {{- with .Values.control.auditLog }}
  audit_log: {{ . | quote }}
  {{- end }}
drain:
  delay: {{ $delay }}
  timeout: {{ .Values.drain.timeout }}
{{- end -}}
