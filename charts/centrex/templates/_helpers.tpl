{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "centrex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name used as the prefix of every resource. Truncated to 63
characters (DNS label limit); the release name is used alone when it already
contains the chart name.
*/}}
{{- define "centrex.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "centrex.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels. Takes a dict: ctx (the root context) and component.
  {{- include "centrex.labels" (dict "ctx" $ "component" "operator") | nindent 4 }}
*/}}
{{- define "centrex.labels" -}}
helm.sh/chart: {{ include "centrex.chart" .ctx }}
{{ include "centrex.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: centrex
{{- end }}

{{/*
Selector labels (immutable on Deployments and StatefulSets). Same dict as
centrex.labels.
*/}}
{{- define "centrex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "centrex.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "centrex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "centrex.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Centrex image, shared by the operator and the pods it creates.
*/}}
{{- define "centrex.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the in-chart etcd StatefulSet and of its headless (peer) Service, so
that member N is reachable as <etcd.fullname>-N.<etcd.fullname>.<namespace>.svc.
*/}}
{{- define "centrex.etcd.fullname" -}}
{{- printf "%s-etcd" (include "centrex.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Stable DNS name of etcd member N. Takes a dict: ctx and index.
*/}}
{{- define "centrex.etcd.memberHost" -}}
{{- $name := include "centrex.etcd.fullname" .ctx }}
{{- printf "%s-%d.%s.%s.svc" $name (int .index) $name .ctx.Release.Namespace }}
{{- end }}

{{/*
--initial-cluster value: member=peerURL for every replica.
*/}}
{{- define "centrex.etcd.initialCluster" -}}
{{- $members := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $host := include "centrex.etcd.memberHost" (dict "ctx" $ "index" $i) }}
{{- $members = append $members (printf "%s-%d=http://%s:2380" (include "centrex.etcd.fullname" $) $i $host) }}
{{- end }}
{{- join "," $members }}
{{- end }}

{{/*
Comma-separated etcd client URLs for the operator: the in-chart members, or
etcd.external.endpoints. Fails with a clear message on a contradictory or
missing etcd configuration.
*/}}
{{- define "centrex.etcd.endpoints" -}}
{{- if .Values.etcd.enabled }}
{{- if .Values.etcd.external.endpoints }}
{{- fail "etcd.external.endpoints is set but etcd.enabled=true: set etcd.enabled=false to use an external etcd, or clear etcd.external.endpoints" }}
{{- end }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $urls = append $urls (printf "http://%s:2379" (include "centrex.etcd.memberHost" (dict "ctx" $ "index" $i))) }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- if not .Values.etcd.external.endpoints }}
{{- fail "etcd.enabled=false needs etcd.external.endpoints: list the client URLs of an existing etcd (e.g. --set 'etcd.external.endpoints={http://etcd.db.svc:2379}'), or set etcd.enabled=true to deploy one with the chart" }}
{{- end }}
{{- join "," .Values.etcd.external.endpoints }}
{{- end }}
{{- end }}
