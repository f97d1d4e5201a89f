{{/* The name of one service's objects: <release>-<service>, at most 63 characters. */}}
{{- define "kairyu.name" -}}
{{- printf "%s-%s" .Release.Name .Values.service | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object (Kubernetes' recommended labels). */}}
{{- define "kairyu.labels" -}}
app.kubernetes.io/name: kairyu-{{ .Values.service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.service }}
app.kubernetes.io/part-of: kairyu
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The selector of one service's pods. */}}
{{- define "kairyu.selector" -}}
app.kubernetes.io/name: kairyu-{{ .Values.service }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* image: registry/repository, then @digest when one is pinned, else :tag. */}}
{{- define "kairyu.image" -}}
{{- $g := .Values.global.image -}}
{{- $repo := printf "%s/%s" $g.registry .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default $g.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The NATS URL a service connects with (its own user when NATS auth is on). */}}
{{- define "kairyu.natsUrl" -}}
{{- $nats := .Values.global.nats -}}
{{- if $nats.url -}}
{{- $nats.url -}}
{{- else -}}
{{- printf "nats://%s-nats.%s.svc:4222" .Release.Name .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
Render one object from a named template, with the user's `merge` hatch deep-merged over it, so an
unusual need (an extra annotation, a sidecar) never requires forking the chart.
*/}}
{{- define "kairyu.object" -}}
{{- $obj := include .template .ctx | fromYaml -}}
{{- with .merge -}}
{{- $obj = mustMergeOverwrite $obj (deepCopy .) -}}
{{- end -}}
{{- toYaml $obj -}}
{{- end -}}
