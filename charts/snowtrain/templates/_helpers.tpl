{{/* Names, labels and the RBAC rules shared by the ClusterRole and the namespaced Roles. */}}

{{- define "snowtrain.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "snowtrain.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "snowtrain.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: snowtrain
{{- end -}}

{{- define "snowtrain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "snowtrain.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "snowtrain.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "snowtrain.webhookService" -}}
{{- printf "%s-webhook" (include "snowtrain.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "snowtrain.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "snowtrain.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-scoped, so named after the release and its namespace: two releases never clash. */}}
{{- define "snowtrain.webhookConfiguration" -}}
{{- printf "%s-%s" (include "snowtrain.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "snowtrain.leaderLease" -}}
{{- printf "%s-leader" (include "snowtrain.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "snowtrain.metricsService" -}}
{{- printf "%s-metrics" (include "snowtrain.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator patches the caBundle itself unless cert-manager injects it. */}}
{{- define "snowtrain.operatorIssuesCerts" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) -}}true{{- end -}}
{{- end -}}

{{/*
What the operator does inside the namespaces it watches. tests/unit/test_rbac.py derives the
calls from the operator's source and fails when these rules grant more, or less.
*/}}
{{- define "snowtrain.workloadRules" -}}
- apiGroups: [snowtrain.io]
  resources: [finetunejobs, pretrainjobs, batchpredictions, trainingschedules]
  verbs: [get, list, watch]
- apiGroups: [snowtrain.io]
  resources: [finetunejobs/status, pretrainjobs/status, batchpredictions/status, trainingschedules/status]
  verbs: [patch]
# A TrainingSchedule's runs: created on its ticks, deleted past its history limits.
- apiGroups: [snowtrain.io]
  resources: [finetunejobs, pretrainjobs]
  verbs: [create, delete]
# Children: trainer config, training Job (+ workers Service), serving Deployment + Service;
# read back on a name conflict to check they are the job's (by owner uid) before any use.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, delete]
{{- if .Values.networkPolicy.enabled }}
# NetworkPolicies of training and serving pods (networkPolicy.enabled).
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, delete]
{{- end }}
# Observation: pod state and the trainer's progress lines.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# Events on every status transition (kopf posts its own too); a Job's Events say why it
# has no pod (a quota, Pod Security admission).
- apiGroups: [""]
  resources: [events]
  verbs: [list, create]
{{- end -}}

{{/* What kopf needs cluster-wide whatever the watched namespaces. */}}
{{- define "snowtrain.frameworkRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
# kopf observes the Namespace objects it was told to watch.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- if include "snowtrain.operatorIssuesCerts" . }}
# The caBundle of its own webhook configuration, and nothing else of the cluster's admission.
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations]
  resourceNames: [{{ include "snowtrain.webhookConfiguration" . }}]
  verbs: [get, patch]
{{- end }}
{{- end -}}

{{/* What the operator does in its own namespace: its leader Lease and its webhook Secret,
both created empty by the chart and only ever read and written by name. */}}
{{- define "snowtrain.ownNamespaceRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ include "snowtrain.leaderLease" . }}]
  verbs: [get, update]
{{- if .Values.webhook.enabled }}
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [{{ include "snowtrain.webhookSecret" . }}]
  verbs: [get{{ if include "snowtrain.operatorIssuesCerts" . }}, patch{{ end }}]
{{- end }}
{{- end -}}
