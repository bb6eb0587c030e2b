{{/* The CSI plugin name is compiled into fastvirt-csi; it is not a value. */}}
{{- define "fastvirt.driverName" -}}
block.fastvirt.io
{{- end }}

{{- define "fastvirt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name alone when it already contains the chart name. */}}
{{- define "fastvirt.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Object names per component, trimmed so the suffix survives the 63-character limit. */}}
{{- define "fastvirt.operator.fullname" -}}
{{- printf "%s-operator" (include "fastvirt.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}
{{- define "fastvirt.controller.fullname" -}}
{{- printf "%s-controller" (include "fastvirt.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}
{{- define "fastvirt.node.fullname" -}}
{{- printf "%s-node" (include "fastvirt.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}
{{- define "fastvirt.agent.fullname" -}}
{{- printf "%s-agent" (include "fastvirt.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}
{{- define "fastvirt.installCheck.fullname" -}}
{{- printf "%s-install-check" (include "fastvirt.fullname" . | trunc 49 | trimSuffix "-") }}
{{- end }}

{{- define "fastvirt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "operator"). */}}
{{- define "fastvirt.labels" -}}
helm.sh/chart: {{ include "fastvirt.chart" .root }}
{{ include "fastvirt.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: fastvirt
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels a component's selector matches; they never change across upgrades. */}}
{{- define "fastvirt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fastvirt.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* "repository:tag" of an image value; an empty tag means the chart's appVersion. */}}
{{- define "fastvirt.image" -}}
{{- $image := .image -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* The kubelet directory without a trailing slash, so joined paths have one separator. */}}
{{- define "fastvirt.kubeletDir" -}}
{{- trimSuffix "/" .Values.kubeletDir }}
{{- end }}

{{/* Where kubelet expects this plugin's socket, and the same path the registrar registers. */}}
{{- define "fastvirt.pluginDir" -}}
{{- printf "%s/plugins/%s" (include "fastvirt.kubeletDir" .) (include "fastvirt.driverName" .) }}
{{- end }}
