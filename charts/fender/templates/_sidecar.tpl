{{/*
The sidecar, for any pod spec. In a Deployment of your own chart (with this chart as the
dependency `fender`):

  template:
    metadata:
      annotations:
        {{- include "fender.podAnnotations" .Subcharts.fender | nindent 8 }}
    spec:
      initContainers:
        {{- include "fender.initContainers" .Subcharts.fender | nindent 8 }}
      containers:
        - name: app
          ...
        {{- include "fender.containers" .Subcharts.fender | nindent 8 }}
      volumes:
        {{- include "fender.volumes" .Subcharts.fender | nindent 8 }}

Each renders nothing where the sidecar mode has nothing to add, so all four can always be
included. The ConfigMap with the policy file and the token Secret come with the dependency.
*/}}

{{- define "fender.initContainers" -}}
{{- if eq .Values.sidecar.mode "native" -}}
- {{ include "fender.container" . | indent 2 | trim }}
{{- end -}}
{{- end -}}

{{- define "fender.containers" -}}
{{- if eq .Values.sidecar.mode "classic" -}}
- {{ include "fender.container" . | indent 2 | trim }}
{{- end -}}
{{- end -}}

{{- define "fender.volumes" -}}
- name: fender-policy
  configMap:
    name: {{ include "fender.policyConfigMap" . }}
- name: fender-token
  secret:
    secretName: {{ include "fender.tokenSecret" . }}
    items:
      - key: {{ include "fender.tokenKey" . }}
        path: token
{{- with .Values.redis.password.existingSecret }}
- name: fender-redis
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.redis.password.key }}
        path: password
{{- end }}
- name: fender-queues
  {{- if .Values.queueStorage.persistentVolumeClaim.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "fender.queueClaim" . }}
  {{- else }}
  emptyDir:
    {{- toYaml (.Values.queueStorage.emptyDir | default dict) | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "fender.podAnnotations" -}}
{{- $annotations := dict -}}
{{- $monitor := or .Values.metrics.podMonitor.enabled .Values.metrics.serviceMonitor.enabled -}}
{{- if and .Values.metrics.annotations (not $monitor) -}}
{{- $_ := set $annotations "prometheus.io/scrape" "true" -}}
{{- $_ := set $annotations "prometheus.io/port" (toString .Values.control.port) -}}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- if .Values.policyChecksum -}}
{{- $_ := set $annotations "checksum/fender-policy" (include "fender.policyFile" . | sha256sum) -}}
{{- end -}}
{{- with $annotations }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{- define "fender.container" -}}
name: fender
image: {{ include "fender.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- if eq .Values.sidecar.mode "native" }}
restartPolicy: Always
{{- end }}
env:
  - name: FENDER_CONFIG
    value: /etc/fender/fender.yaml
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: fender-admin
    containerPort: {{ .Values.control.port }}
startupProbe:
  httpGet: {path: /readyz, port: fender-admin}
  {{- toYaml .Values.probes.startup | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: fender-admin}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
livenessProbe:
  httpGet: {path: /livez, port: fender-admin}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  # The directory, not a subPath: only then does the kubelet update the file in place,
  # which Fender's watcher turns into a hot reload.
  - name: fender-policy
    mountPath: /etc/fender
    readOnly: true
  - name: fender-token
    mountPath: /var/run/secrets/fender
    readOnly: true
  {{- if .Values.redis.password.existingSecret }}
  - name: fender-redis
    mountPath: /var/run/secrets/fender-redis
    readOnly: true
  {{- end }}
  # Durable queues' SQLite files (queueStorage).
  - name: fender-queues
    mountPath: {{ .Values.queueStorage.mountPath }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}
