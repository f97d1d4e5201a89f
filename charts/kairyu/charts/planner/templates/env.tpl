{{/* The planner's limits and pod rules as KAIRYU_PLANNING__* variables (docs/planner.md). */}}
{{- define "kairyu.planner.env" -}}
- name: KAIRYU_PLANNING__MAX_NODES
  value: {{ coalesce .Values.global.maxNodes .Values.planning.maxNodes | quote }}
{{- if not (kindIs "invalid" .Values.planning.maxCostPerHour) }}
- name: KAIRYU_PLANNING__MAX_COST_PER_HOUR
  value: {{ .Values.planning.maxCostPerHour | quote }}
{{- end }}
- name: KAIRYU_PLANNING__ALLOW_HOST_ACCESS
  value: {{ .Values.planning.allowHostAccess | quote }}
{{- end -}}
