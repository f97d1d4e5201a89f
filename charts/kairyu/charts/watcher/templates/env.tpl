{{/* Leader election (see docs/watcher.md): the Lease in the release's namespace, the pod as candidate. */}}
{{- define "kairyu.watcher.env" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "watcher.replicas > 1 needs watcher.leaderElection.enabled: two watchers must not both work" }}
{{- end }}
- name: KAIRYU_LEADER_ELECTION__ENABLED
  value: {{ .Values.leaderElection.enabled | quote }}
{{- if .Values.leaderElection.enabled }}
- name: KAIRYU_LEADER_ELECTION__NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: KAIRYU_LEADER_ELECTION__LEASE_NAME
  value: {{ include "kairyu.name" . | quote }}
- name: KAIRYU_LEADER_ELECTION__IDENTITY
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end -}}
