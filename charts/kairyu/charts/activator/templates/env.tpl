{{/* The activator's listeners as KAIRYU_ACTIVATOR__* variables (docs/chart.md, "The activator"). */}}
{{- define "kairyu.activator.env" -}}
{{- $load := include "kairyu.activator.port" (dict "ctx" . "name" "load") }}
{{- $http := include "kairyu.activator.port" (dict "ctx" . "name" "http") }}
- name: KAIRYU_ACTIVATOR__LOAD_PORT
  value: {{ $load | quote }}
- name: KAIRYU_ACTIVATOR__PORT
  value: {{ $http | quote }}
{{- /* The address the sets' EndpointSlices name while they are cold: this pod's own. */}}
- name: KAIRYU_ACTIVATOR__ADDRESS
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: KAIRYU_ACTIVATOR__RETRY_AFTER_S
  value: {{ .Values.retryAfterSeconds | quote }}
{{- end -}}

{{/*
The container port named `name` (load or http) of `ports`; the render fails without one, or when
it is the health port (both listeners and /healthz bind every address of the pod).
*/}}
{{- define "kairyu.activator.port" -}}
{{- $found := "" }}
{{- range .ctx.Values.ports }}
{{- if eq .name $.name }}{{ $found = toString .containerPort }}{{ end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "activator.ports needs a port named %s" .name) }}
{{- end }}
{{- if eq $found (toString .ctx.Values.global.healthPort) }}
{{- fail (printf "activator.ports: %s's containerPort %s is global.healthPort; give it another" .name $found) }}
{{- end }}
{{- $found -}}
{{- end -}}
