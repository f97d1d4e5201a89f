{{/* The planner's limits and pod rules as KAIRYU_PLANNING__* variables (docs/planner.md). */}}
{{- define "kairyu.planner.env" -}}
- name: KAIRYU_PLANNING__MAX_NODES
  value: {{ coalesce .Values.global.maxNodes .Values.planning.maxNodes | quote }}
{{- if not (kindIs "invalid" .Values.planning.maxCostPerHour) }}
- name: KAIRYU_PLANNING__MAX_COST_PER_HOUR
  value: {{ .Values.planning.maxCostPerHour | quote }}
{{- end }}
{{- /* The planner tells only byo from the others; the provisioner reads its backend itself. */}}
- name: KAIRYU_PLANNING__NODE_PROVISIONER
  value: {{ .Values.global.nodeProvisioner | default "karpenter" | quote }}
- name: KAIRYU_PLANNING__ALLOW_HOST_ACCESS
  value: {{ .Values.planning.allowHostAccess | quote }}
- name: KAIRYU_HUB__ENDPOINT
  value: {{ .Values.hub.endpoint | quote }}
{{- /* The activator's Service as kairyu.name names it (charts/activator), its load port. */}}
{{- $activator := printf "%s-activator" .Release.Name | trunc 63 | trimSuffix "-" }}
- name: KAIRYU_AUTOSCALING__ACTIVATOR_URL
  value: {{ .Values.autoscaling.activatorUrl | default (printf "http://%s.%s.svc:8080" $activator .Release.Namespace) | quote }}
{{- $tls := .Values.webhook }}
{{- if not (or $tls.certManager.enabled $tls.tls.secretName) }}
{{- /* The default mode: the planner issues its own webhook certificate (kairyu_planner.certificates). */}}
{{- $name := printf "%s-planner" .Release.Name }}
- name: KAIRYU_WEBHOOK__SELF_ISSUED__SECRET
  value: {{ printf "%s-webhook-tls" $name | quote }}
- name: KAIRYU_WEBHOOK__SELF_ISSUED__NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: KAIRYU_WEBHOOK__SELF_ISSUED__SERVICE
  value: {{ $name | quote }}
- name: KAIRYU_WEBHOOK__SELF_ISSUED__CONFIGURATION
  value: {{ $name | quote }}
- name: KAIRYU_WEBHOOK__SELF_ISSUED__VALIDITY_DAYS
  value: {{ .Values.webhook.certValidityDays | quote }}
{{- end }}
{{- end -}}
