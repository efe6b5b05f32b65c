{{- define "cocoon.labels" -}}
app.kubernetes.io/part-of: cocoon
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}
