{{/* The tuner's Job settings as KAIRYU_JOB__* variables (docs/tuner.md). */}}
{{- define "kairyu.tuner.env" -}}
{{- $g := .Values.global.image }}
- name: KAIRYU_JOB__TUNING_IMAGE
  value: {{ .Values.job.tuningImage | default (printf "%s/kairyu-tuning:%s" $g.registry ($g.tag | default .Chart.AppVersion)) | quote }}
- name: KAIRYU_JOB__DATA_PULLER_IMAGE
  value: {{ .Values.job.dataPullerImage | quote }}
- name: KAIRYU_JOB__MAX_DOWNLOAD_MIB
  value: {{ .Values.job.maxDownloadMiB | quote }}
- name: KAIRYU_JOB__ACTIVE_DEADLINE_S
  value: {{ .Values.job.activeDeadlineSeconds | quote }}
{{- with .Values.job.downloadAllowCidrs }}
- name: KAIRYU_JOB__DOWNLOAD_ALLOW_CIDRS
  value: {{ toJson . | quote }}
{{- end }}
{{- end -}}
