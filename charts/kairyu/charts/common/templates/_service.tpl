{{/*
Everything one kairyu service needs, from its subchart's values: ServiceAccount, least-privilege
ClusterRole and binding, Deployment (restricted Pod Security), NetworkPolicy, PodDisruptionBudget
(when replicas > 1), and its NATS credentials when NATS authorization is on. Service subcharts
contain nothing but `{{ include "kairyu.service" . }}` and their values; this is the one loop.
*/}}
{{- define "kairyu.service" -}}
{{- if .Values.enabled }}
{{ include "kairyu.object" (dict "template" "kairyu.serviceAccount" "ctx" . "merge" .Values.serviceAccount.merge) }}
---
{{ include "kairyu.object" (dict "template" "kairyu.clusterRole" "ctx" . "merge" .Values.rbac.merge) }}
---
{{ include "kairyu.object" (dict "template" "kairyu.clusterRoleBinding" "ctx" . "merge" dict) }}
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
{{- if .Values.global.nats.auth.enabled }}
---
{{ include "kairyu.object" (dict "template" "kairyu.natsCredentials" "ctx" . "merge" dict) }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "kairyu.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "kairyu.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: true
{{- end -}}

{{- define "kairyu.clusterRole" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ include "kairyu.name" . }}
  labels:
    {{- include "kairyu.labels" . | nindent 4 }}
rules:
  {{- toYaml .Values.rbac.rules | nindent 2 }}
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
            - name: KAIRYU_NATS__URL
              {{- if $g.nats.auth.enabled }}
              valueFrom:
                secretKeyRef:
                  name: {{ include "kairyu.name" . }}-nats
                  key: url
              {{- else }}
              value: {{ include "kairyu.natsUrl" . | quote }}
              {{- end }}
            - name: KAIRYU_NATS__STREAM
              value: {{ $g.nats.stream | quote }}
            - name: KAIRYU_NATS__SUBJECT_PREFIX
              value: {{ $g.nats.subjectPrefix | quote }}
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
            - name: OTEL_SERVICE_NAME
              value: kairyu-{{ .Values.service }}
            {{- if $g.otlp.endpoint }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ $g.otlp.endpoint | quote }}
            - name: OTEL_EXPORTER_OTLP_PROTOCOL
              value: {{ $g.otlp.protocol | quote }}
            {{- else }}
            - name: OTEL_TRACES_EXPORTER
              value: none
            {{- end }}
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
            httpGet: {path: /readyz, port: health}
            periodSeconds: 5
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with .Values.volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
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
The service's own NATS user. The password is generated once and kept across upgrades (lookup);
the umbrella's nats-auth Secret gives the NATS server the same users with their permissions.
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
{{- $url := include "kairyu.natsUrl" . | replace "nats://" (printf "nats://%s:%s@" (include "kairyu.name" .) $password) -}}
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
  url: {{ $url | b64enc }}
{{- end -}}
