{{/*
Azure Service Bus as the bus (global.bus: servicebus; docs/bus.md). The services then get
KAIRYU_BUS and KAIRYU_SERVICEBUS__* instead of KAIRYU_NATS__*, and no nats-setup sidecar: the
entities come from the ARM template in files/servicebus-entities.json, created before the
install, since creating them takes the namespace's Manage right, which no service holds.
*/}}

{{/* "true" when the services use Azure Service Bus, else empty. */}}
{{- define "kairyu.onServiceBus" -}}
{{- if eq (toString .Values.global.bus) "servicebus" -}}true{{- end -}}
{{- end -}}

{{/* "true" when they sign in to it with Azure Workload Identity, else empty. */}}
{{- define "kairyu.servicebusWorkloadIdentity" -}}
{{- if and (include "kairyu.onServiceBus" .) (eq (toString .Values.global.servicebus.auth) "workloadIdentity") -}}true{{- end -}}
{{- end -}}

{{/*
The client id of the service's managed identity, for its ServiceAccount's annotation: from
global.servicebus.workloadIdentity.clientIds.<service>. Empty when the annotation is already in
<service>.serviceAccount.annotations (the provisioner's azure backend sets it there); a render
without either fails, and so does one where the two differ: a ServiceAccount has one identity.
*/}}
{{- define "kairyu.workloadIdentityClientId" -}}
{{- if include "kairyu.servicebusWorkloadIdentity" . -}}
{{- $service := .Values.service -}}
{{- $fromGlobal := index (.Values.global.servicebus.workloadIdentity.clientIds | default dict) $service | default "" -}}
{{- $fromAccount := index (.Values.serviceAccount.annotations | default dict) "azure.workload.identity/client-id" | default "" -}}
{{- if and $fromGlobal $fromAccount (ne $fromGlobal $fromAccount) -}}
{{- fail (printf "global.servicebus.workloadIdentity.clientIds.%s and %s.serviceAccount.annotations azure.workload.identity/client-id differ: a ServiceAccount has one workload identity, so give that one managed identity the Service Bus roles and set one of them" $service $service) -}}
{{- end -}}
{{- if not (or $fromGlobal $fromAccount) -}}
{{- fail (printf "global.servicebus.workloadIdentity.clientIds.%s is required with global.servicebus.auth workloadIdentity: the client id of the %s's managed identity (docs/bus.md, \"Installing on Azure Service Bus\")" $service $service) -}}
{{- end -}}
{{- if not $fromAccount -}}{{ $fromGlobal }}{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A service container's Service Bus settings (kairyu_core.settings.ServiceBusSettings): the
entities' base name, and either the namespace (a token from workload identity) or the
connection string from the user's Secret, which the kubelet reads (no service reads Secrets).
*/}}
{{- define "kairyu.servicebusEnv" -}}
{{- $sb := .Values.global.servicebus -}}
- name: KAIRYU_BUS
  value: servicebus
- name: KAIRYU_SERVICEBUS__STREAM
  value: {{ $sb.stream | quote }}
{{- if eq (toString $sb.auth) "connectionString" }}
- name: KAIRYU_SERVICEBUS__CONNECTION_STRING
  valueFrom:
    secretKeyRef:
      name: {{ required "global.servicebus.connectionStringSecret.name is required with global.servicebus.auth connectionString: an existing Secret holding the connection string" $sb.connectionStringSecret.name }}
      key: {{ required "global.servicebus.connectionStringSecret.key is required with global.servicebus.auth connectionString" $sb.connectionStringSecret.key }}
{{- else }}
- name: KAIRYU_SERVICEBUS__FULLY_QUALIFIED_NAMESPACE
  value: {{ required "global.servicebus.fullyQualifiedNamespace is required with global.servicebus.auth workloadIdentity: <namespace>.servicebus.windows.net" $sb.fullyQualifiedNamespace | quote }}
{{- end }}
{{- end -}}
