{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "rtim.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: fullnameOverride, else the release name, with
the chart name appended unless the release name already contains it. It is
cut to 40 characters so that "-recommendations" and the migrations and test
suffixes still fit in 63.
*/}}
{{- define "rtim.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The services of the mesh and what the templates need to know about each:
its port, whether it serves gRPC or HTTP, whether it owns tables, and which
other services call it. The callers follow the code: the gateway calls every
service, and decisioning and surveys read profiles.
*/}}
{{- define "rtim.catalog" -}}
ingestion:
  port: 50051
  protocol: grpc
  database: false
  callers: [gateway]
profile:
  port: 50052
  protocol: grpc
  database: true
  callers: [gateway, decisioning, surveys]
decisioning:
  port: 50053
  protocol: grpc
  database: true
  callers: [gateway]
recommendations:
  port: 50054
  protocol: grpc
  database: true
  callers: [gateway]
surveys:
  port: 50055
  protocol: grpc
  database: true
  callers: [gateway]
gamification:
  port: 50056
  protocol: grpc
  database: true
  callers: [gateway]
gateway:
  port: 8080
  protocol: http
  database: false
  callers: []
{{- end }}

{{/*
Labels that select the pods of one component. They never contain the
version, because a Deployment's selector cannot change after it is created.
Takes a dict with "root" (the chart context) and "component".
*/}}
{{- define "rtim.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtim.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/*
Every label of a resource: the selector labels plus version and owner.
Takes the same dict as rtim.selectorLabels.
*/}}
{{- define "rtim.labels" -}}
{{ include "rtim.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rtim
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtim.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Name of the Secret with the database URL and the API keys file.
*/}}
{{- define "rtim.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "rtim.fullname" .)) }}
{{- end }}

{{/*
Rejects value combinations that the schema cannot express.
*/}}
{{- define "rtim.validate" -}}
{{- if and .Values.secrets.existingSecret .Values.secrets.apiKeys }}
{{- fail "secrets.apiKeys must be empty when secrets.existingSecret is set: the keys file comes from that Secret" }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) (not .Values.backends.databaseUrl) }}
{{- fail "set backends.databaseUrl, or secrets.existingSecret with the database URL under secrets.databaseUrlKey" }}
{{- end }}
{{- range $name, $service := .Values.services }}
{{- if and $service.autoscaling.enabled (gt (int $service.autoscaling.minReplicas) (int $service.autoscaling.maxReplicas)) }}
{{- fail (printf "services.%s.autoscaling.minReplicas (%v) is greater than maxReplicas (%v)" $name $service.autoscaling.minReplicas $service.autoscaling.maxReplicas) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Seconds Kubernetes waits between SIGTERM and SIGKILL: the preStop sleep, then
the drain timeout, then 5 seconds for closing pools and flushing logs.
*/}}
{{- define "rtim.terminationGracePeriod" -}}
{{- add .Values.config.preStopSleepSeconds .Values.config.drainTimeoutSeconds 5 }}
{{- end }}

{{/*
Pod and container security settings shared by every rtim pod: the image's
numeric non-root user, no privilege escalation, no capabilities, a read-only
root filesystem and the runtime's default seccomp profile.
*/}}
{{- define "rtim.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "rtim.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
A PromQL selector: the metric name followed by the non-empty matchers.
Takes a dict with "metric" and "matchers" (a list of strings).
*/}}
{{- define "rtim.promSelector" -}}
{{- $matchers := list }}
{{- range .matchers }}
{{- if . }}
{{- $matchers = append $matchers . }}
{{- end }}
{{- end }}
{{- printf "%s{%s}" .metric (join ", " $matchers) }}
{{- end }}
