{{/*
Everything one kairyu service needs, from its subchart's values: ServiceAccount, least-privilege
ClusterRole and binding (a Role and RoleBinding in global.watchNamespace when it is set),
Deployment (restricted Pod Security), NetworkPolicy, PodDisruptionBudget (when replicas > 1),
the Role and binding for its leader-election Lease (_leadership.tpl), and on NATS its
nats-setup sidecar and its NATS credentials when NATS authorization is on; on Azure Service Bus
(global.bus: servicebus, _servicebus.tpl) its Service Bus settings and workload identity. Service
subcharts contain nothing but `{{ include "kairyu.service" . }}` and their values; this is the
one loop.
*/}}
{{- define "kairyu.service" -}}
{{- if .Values.enabled }}
{{ include "kairyu.object" (dict "template" "kairyu.serviceAccount" "ctx" . "merge" .Values.serviceAccount.merge) }}
{{- if .Values.global.watchNamespace }}
{{- /* One namespace: namespaced rights there only; nodes and NodeClaims stay cluster-wide. */}}
---
{{ include "kairyu.object" (dict "template" "kairyu.role" "ctx" . "merge" .Values.rbac.merge) }}
---
{{ include "kairyu.object" (dict "template" "kairyu.roleBinding" "ctx" . "merge" dict) }}
{{- if .Values.rbac.clusterRules }}
---
{{ include "kairyu.object" (dict "template" "kairyu.clusterRole" "ctx" . "merge" dict) }}
---
{{ include "kairyu.object" (dict "template" "kairyu.clusterRoleBinding" "ctx" . "merge" dict) }}
{{- end }}
{{- else }}
---
{{ include "kairyu.object" (dict "template" "kairyu.clusterRole" "ctx" . "merge" .Values.rbac.merge) }}
---
{{ include "kairyu.object" (dict "template" "kairyu.clusterRoleBinding" "ctx" . "merge" dict) }}
{{- end }}
---
{{ include "kairyu.object" (dict "template" "kairyu.deployment" "ctx" . "merge" .Values.deployment.merge) }}
{{- if .Values.global.networkPolicy.enabled }}
---
{{ include "kairyu.object" (dict "template" "kairyu.networkPolicy" "ctx" . "merge" .Values.networkPolicy.merge) }}
{{- end }}
{{- if gt (int .Values.replicas) 1 }}
---
{{ include "kairyu.object" (dict "template" "kairyu.pdb" "ctx" . "merge" dict) }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
---
{{ include "kairyu.object" (dict "template" "kairyu.leaseRole" "ctx" . "merge" dict) }}
---
{{ include "kairyu.object" (dict "template" "kairyu.leaseRoleBinding" "ctx" . "merge" dict) }}
{{- end }}
{{- if and (not (include "kairyu.onServiceBus" .)) .Values.global.nats.auth.enabled .Values.global.nats.auth.createSecrets }}
---
{{ include "kairyu.object" (dict "template" "kairyu.natsCredentials" "ctx" . "merge" dict) }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "kairyu.serviceAccount" -}}
{{- $annotations := deepCopy (.Values.serviceAccount.annotations | default dict) -}}
{{- with include "kairyu.workloadIdentityClientId" . }}
{{- $_ := set $annotations "azure.workload.identity/client-id" . }}
{{- end }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "kairyu.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: true
{{- end -}}

{{/*
rbac.rules are the service's rights on namespaced resources, rbac.clusterRules on cluster-scoped
ones. Without global.watchNamespace both go into one ClusterRole (every namespace); with it the
namespaced rules become a Role in that namespace and only clusterRules stay cluster-wide.
*/}}
{{- define "kairyu.clusterRole" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ include "kairyu.name" . }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
rules:
  {{- if not .Values.global.watchNamespace }}
  {{- toYaml .Values.rbac.rules | nindent 2 }}
  {{- end }}
  {{- with .Values.rbac.clusterRules }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{- define "kairyu.role" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ include "kairyu.name" . }}
  namespace: {{ .Values.global.watchNamespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
rules:
  {{- toYaml .Values.rbac.rules | nindent 2 }}
{{- end -}}

{{- define "kairyu.roleBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ include "kairyu.name" . }}
  namespace: {{ .Values.global.watchNamespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "kairyu.name" . }}
subjects:
  - kind: ServiceAccount
    name: {{ include "kairyu.name" . }}
    namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "kairyu.clusterRoleBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ include "kairyu.name" . }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ include "kairyu.name" . }}
subjects:
  - kind: ServiceAccount
    name: {{ include "kairyu.name" . }}
    namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "kairyu.deployment" -}}
{{- $g := .Values.global -}}
{{- $nats := not (include "kairyu.onServiceBus" .) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "kairyu.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      {{- include "kairyu.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "kairyu.labels" . | nindent 8 }}
        {{- if include "kairyu.servicebusWorkloadIdentity" . }}
        {{- /* Azure Workload Identity's webhook injects the token file and client id. */}}
        azure.workload.identity/use: "true"
        {{- end }}
      {{- if or .Values.podAnnotations $g.prometheusAnnotations }}
      annotations:
        {{- if $g.prometheusAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $g.healthPort | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "kairyu.name" . }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      {{- with $g.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- if $nats }}
      initContainers:
        # kairyu's streams, created or updated by the one component that configures them (the
        # service only waits until they exist), under NATS authorization as the admin identity,
        # whose credentials only this container sees (docs/bus.md, "Who may do what"). A native
        # sidecar: it runs beside the service for the pod's life and sets the streams up again
        # every setupEverySeconds, so a deleted stream comes back without a pod restart (a
        # restarted container does not re-run init containers). No startupProbe: it must not hold
        # back the service's start (the planner's webhook must serve while NATS is down).
        - name: nats-setup
          restartPolicy: Always
          image: {{ include "kairyu.image" . }}
          imagePullPolicy: {{ $g.image.pullPolicy }}
          command:
            - python
            - -m
            - kairyu_core.bus.setup
            - --every
            - {{ $g.nats.auth.setupEverySeconds | default 30 | int | quote }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          env:
            {{- include "kairyu.natsEnv" (dict "ctx" . "user" (printf "%s-admin" .Release.Name)) | nindent 12 }}
            - name: KAIRYU_LOG__FORMAT
              value: json
          resources:
            requests: {cpu: 10m, memory: 64Mi}
            limits: {memory: 128Mi}
          {{- with $g.nats.tls.secretName }}
          volumeMounts:
            - name: nats-tls
              mountPath: /etc/kairyu/nats-tls
              readOnly: true
          {{- end }}
      {{- end }}
      containers:
        - name: {{ .Values.service }}
          image: {{ include "kairyu.image" . }}
          imagePullPolicy: {{ $g.image.pullPolicy }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          ports:
            - name: health
              containerPort: {{ $g.healthPort }}
            {{- range .Values.ports }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
            {{- end }}
          env:
            {{- if $nats }}
            {{- include "kairyu.natsEnv" (dict "ctx" . "user" (include "kairyu.name" .)) | nindent 12 }}
            {{- else }}
            {{- include "kairyu.servicebusEnv" . | nindent 12 }}
            {{- end }}
            - name: KAIRYU_LOG__FORMAT
              value: json
            - name: KAIRYU_LOG__LEVEL
              value: {{ $g.logLevel | quote }}
            - name: KAIRYU_HEALTH_PORT
              value: {{ $g.healthPort | quote }}
            {{- with $g.watchNamespace }}
            - name: KAIRYU_NAMESPACE
              value: {{ . | quote }}
            {{- end }}
            {{- include "kairyu.leaderElectionEnv" . | nindent 12 }}
            - name: OTEL_SERVICE_NAME
              value: kairyu-{{ .Values.service }}
            {{- $exporters := list }}
            {{- if $g.otlp.endpoint }}
            {{- $exporters = append $exporters "otlp" }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ $g.otlp.endpoint | quote }}
            - name: OTEL_EXPORTER_OTLP_PROTOCOL
              value: {{ $g.otlp.protocol | quote }}
            {{- end }}
            {{- if ($g.zipkin).endpoint }}
            {{- $exporters = append $exporters "zipkin" }}
            - name: OTEL_EXPORTER_ZIPKIN_ENDPOINT
              value: {{ $g.zipkin.endpoint | quote }}
            {{- end }}
            - name: OTEL_TRACES_EXPORTER
              value: {{ join "," $exporters | default "none" | quote }}
            {{- if .Values.envTemplate }}
            {{- include (printf "kairyu.%s.env" .Values.service) . | nindent 12 }}
            {{- end }}
            {{- with .Values.env }}
            {{- tpl (toYaml .) $ | nindent 12 }}
            {{- end }}
          {{- with .Values.envFrom }}
          envFrom:
            {{- tpl (toYaml .) $ | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          startupProbe:
            httpGet: {path: /healthz, port: health}
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            httpGet: {path: /healthz, port: health}
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            {{- with .Values.readinessProbe }}
            {{- toYaml . | nindent 12 }}
            {{- else }}
            httpGet: {path: /readyz, port: health}
            periodSeconds: 5
            {{- end }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and $nats $g.nats.tls.secretName }}
            - name: nats-tls
              mountPath: /etc/kairyu/nats-tls
              readOnly: true
            {{- end }}
            {{- with .Values.volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if and $nats $g.nats.tls.secretName }}
        - name: nats-tls
          secret:
            secretName: {{ $g.nats.tls.secretName }}
        {{- end }}
        {{- with .Values.volumes }}
        {{- tpl (toYaml .) $ | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{- define "kairyu.networkPolicy" -}}
{{- $g := .Values.global -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "kairyu.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "kairyu.selector" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    - ports:
        - port: {{ $g.healthPort }}
    {{- range .Values.ports }}
    - ports:
        - port: {{ .containerPort }}
    {{- end }}
  egress:
    - ports:
        - {port: 53, protocol: UDP}
        - {port: 53, protocol: TCP}
    - ports:
        {{- range $g.networkPolicy.egressPorts }}
        - port: {{ . }}
        {{- end }}
        {{- if include "kairyu.onServiceBus" . }}
        - port: 5671
        {{- end }}
        {{- range .Values.networkPolicy.extraEgressPorts }}
        - port: {{ . }}
        {{- end }}
{{- end -}}

{{- define "kairyu.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "kairyu.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "kairyu.selector" . | nindent 6 }}
{{- end -}}

{{/*
The NATS settings of a container as the identity `user` (a service's own user, or the admin user
of the nats-setup sidecar): the URL without credentials, user and password from the
identity's Secret, its own reply inbox, TLS files, and the streams' base name and limits. Only
the nats-setup sidecar creates the streams; the services check that they are there.
*/}}
{{- define "kairyu.natsEnv" -}}
{{- $g := .ctx.Values.global -}}
- name: KAIRYU_NATS__URL
  value: {{ include "kairyu.natsUrl" .ctx | quote }}
- name: KAIRYU_NATS__STREAM
  value: {{ $g.nats.stream | quote }}
- name: KAIRYU_NATS__SUBJECT_PREFIX
  value: {{ $g.nats.subjectPrefix | quote }}
- name: KAIRYU_NATS__STATE_MAX_BYTES
  value: {{ $g.nats.streamLimits.stateMaxBytes | int64 | quote }}
{{- if $g.nats.auth.enabled }}
- name: KAIRYU_NATS__USER
  valueFrom:
    secretKeyRef:
      name: {{ .user }}-nats
      key: user
- name: KAIRYU_NATS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .user }}-nats
      key: password
- name: KAIRYU_NATS__INBOX_PREFIX
  value: {{ printf "_INBOX.%s" .user | quote }}
{{- end }}
{{- if $g.nats.tls.secretName }}
- name: KAIRYU_NATS__TLS_CA_FILE
  value: /etc/kairyu/nats-tls/ca.crt
{{- if $g.nats.tls.clientCert }}
- name: KAIRYU_NATS__TLS_CERT_FILE
  value: /etc/kairyu/nats-tls/tls.crt
- name: KAIRYU_NATS__TLS_KEY_FILE
  value: /etc/kairyu/nats-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/*
The service's own NATS user. The password is generated once and kept across upgrades (lookup);
renders without a cluster (`helm template`, GitOps) draw a new one each time, so those set
global.nats.auth.createSecrets=false and provide the Secrets themselves (docs/chart.md).
*/}}
{{- define "kairyu.natsCredentials" -}}
{{- $name := printf "%s-nats" (include "kairyu.name" .) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $password := "" -}}
{{- if and $existing $existing.data $existing.data.password -}}
{{- $password = b64dec $existing.data.password -}}
{{- else -}}
{{- $password = randAlphaNum 32 -}}
{{- end -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
type: Opaque
data:
  user: {{ include "kairyu.name" . | b64enc }}
  password: {{ $password | b64enc }}
{{- end -}}
