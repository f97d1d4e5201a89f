{{/*
Leader election (docs/chart.md, "Replicas"): every replica of a service is a candidate for one
Lease in the release's namespace, named after the service's objects; the one holding it works,
the others wait as standbys. On by default, also at one replica: a rolling update briefly runs
the old and the new pod side by side. More than one replica with it off is refused.
*/}}
{{- define "kairyu.leaderElectionEnv" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "%s.replicas > 1 needs %s.leaderElection.enabled: two replicas must not both work" .Values.service .Values.service) }}
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

{{/* The service's Lease: it may create it, then read and renew only that one. */}}
{{- define "kairyu.leaseRole" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ include "kairyu.name" . }}-lease
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [create]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    resourceNames: [{{ include "kairyu.name" . | quote }}]
    verbs: [get, update]
{{- end -}}

{{- define "kairyu.leaseRoleBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ include "kairyu.name" . }}-lease
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "kairyu.name" . }}-lease
subjects:
  - kind: ServiceAccount
    name: {{ include "kairyu.name" . }}
    namespace: {{ .Release.Namespace }}
{{- end -}}
