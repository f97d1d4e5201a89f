{{/* The provisioner's backend settings as KAIRYU_* variables (see docs/provisioner.md). */}}
{{- define "kairyu.provisioner.env" -}}
- name: KAIRYU_BACKEND
  value: {{ (coalesce .Values.global.nodeProvisioner .Values.backend) | quote }}
- name: KAIRYU_PROVISIONING__MAX_NODES
  value: {{ coalesce .Values.global.maxNodes .Values.maxNodes | quote }}
{{- if eq (coalesce .Values.global.nodeProvisioner .Values.backend) "karpenter" }}
- name: KAIRYU_KARPENTER__NODE_POOL
  value: {{ .Values.karpenter.nodePool | quote }}
- name: KAIRYU_KARPENTER__NODE_CLASS_GROUP
  value: {{ .Values.karpenter.nodeClassGroup | quote }}
- name: KAIRYU_KARPENTER__NODE_CLASS_KIND
  value: {{ .Values.karpenter.nodeClassKind | quote }}
- name: KAIRYU_KARPENTER__NODE_CLASS_NAME
  value: {{ .Values.karpenter.nodeClassName | quote }}
{{- end }}
{{- if eq (coalesce .Values.global.nodeProvisioner .Values.backend) "azure" }}
- name: KAIRYU_AZURE__SUBSCRIPTION_ID
  value: {{ required "provisioner.azure.subscriptionId is required for the azure backend" .Values.azure.subscriptionId | quote }}
- name: KAIRYU_AZURE__RESOURCE_GROUP
  value: {{ required "provisioner.azure.resourceGroup is required for the azure backend" .Values.azure.resourceGroup | quote }}
- name: KAIRYU_AZURE__CLUSTER_NAME
  value: {{ required "provisioner.azure.clusterName is required for the azure backend" .Values.azure.clusterName | quote }}
{{- if eq .Values.azure.credentials "secret" }}
{{- $secret := required "provisioner.azure.credentialsSecret names the Secret with AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET" .Values.azure.credentialsSecret }}
{{- range list "AZURE_CLIENT_ID" "AZURE_TENANT_ID" "AZURE_CLIENT_SECRET" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
