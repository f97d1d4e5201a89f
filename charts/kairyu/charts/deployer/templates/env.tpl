{{/* The deployer's workload images as KAIRYU_WORKLOAD__* variables (docs/deployer.md). */}}
{{- define "kairyu.deployer.env" -}}
{{- with .Values.workload.vllmImage }}
- name: KAIRYU_WORKLOAD__VLLM_IMAGE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.workload.transformersImage }}
- name: KAIRYU_WORKLOAD__TRANSFORMERS_IMAGE
  value: {{ . | quote }}
{{- end }}
- name: KAIRYU_WORKLOAD__TRITON_IMAGE
  value: {{ .Values.workload.tritonImage | quote }}
- name: KAIRYU_WORKLOAD__ADAPTER_PULLER_IMAGE
  value: {{ .Values.workload.adapterPullerImage | quote }}
{{- /* The activator runs here: the inference pods let it read their /metrics. */}}
- name: KAIRYU_WORKLOAD__ACTIVATOR_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end -}}
