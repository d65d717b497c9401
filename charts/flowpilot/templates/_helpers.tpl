{{- define "flowpilot.name" -}}flowpilot{{- end -}}

{{- define "flowpilot.fullname" -}}
{{- if contains "flowpilot" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-flowpilot" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "flowpilot.labels" -}}
app.kubernetes.io/name: flowpilot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "flowpilot.secretName" -}}
{{- if .Values.existingSecret -}}{{ .Values.existingSecret }}{{- else -}}{{ include "flowpilot.fullname" . }}-database{{- end -}}
{{- end -}}

{{- define "flowpilot.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "v%s" .Chart.AppVersion) }}
{{- end -}}

{{/* Pod-level settings every flowpilot pod shares. */}}
{{- define "flowpilot.podSettings" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
securityContext: {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* `flowpilot migrate` before a process starts (idempotent; concurrent
runs wait on PostgreSQL's advisory lock), so the schema is there without a
Helm hook and its Secret is an ordinary resource that `helm uninstall`
removes. */}}
{{- define "flowpilot.migrate" -}}
{{- if .Values.migrate.enabled }}
initContainers:
  - name: migrate
    image: {{ include "flowpilot.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: ["migrate"]
    securityContext: {{- toYaml .Values.securityContext | nindent 6 }}
    envFrom:
      - secretRef:
          name: {{ include "flowpilot.secretName" . }}
    env:
      {{- include "flowpilot.env" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Environment shared by every flowpilot container. */}}
{{- define "flowpilot.env" -}}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
