{{/* The chart's name, cut to 63 characters. */}}
{{- define "gpuplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name for every object, cut to 52 characters so suffixes fit. */}}
{{- define "gpuplane.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "gpuplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gpuplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "api-server"). */}}
{{- define "gpuplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpuplane.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpuplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gpuplane.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gpuplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The bundled etcd's StatefulSet and headless Service name. */}}
{{- define "gpuplane.etcdName" -}}
{{- printf "%s-etcd" (include "gpuplane.fullname" .) -}}
{{- end -}}

{{/* etcd.endpoints of the daemons: the bundled members' stable names, or the external URLs. */}}
{{/* The etcd.* lines for an external etcd with TLS files and a user (both daemons). */}}
{{- define "gpuplane.etcdClientConfig" -}}
{{- $e := .Values.etcd.external -}}
{{- if and (not .Values.etcd.bundled.enabled) $e.tls.secretName }}
etcd.ca-file = /etc/gpuplane/etcd-tls/ca.crt
etcd.cert-file = /etc/gpuplane/etcd-tls/tls.crt
etcd.key-file = /etc/gpuplane/etcd-tls/tls.key
{{- end }}
{{- if and (not .Values.etcd.bundled.enabled) $e.auth.username }}
etcd.username = {{ $e.auth.username }}
etcd.password-file = /etc/gpuplane/etcd-auth/password
{{- end }}
{{- end -}}

{{/* Mounts of the external etcd's TLS and password Secrets (both daemons). */}}
{{- define "gpuplane.etcdClientMounts" -}}
{{- $e := .Values.etcd.external -}}
{{- if and (not .Values.etcd.bundled.enabled) $e.tls.secretName }}
- name: etcd-tls
  mountPath: /etc/gpuplane/etcd-tls
  readOnly: true
{{- end }}
{{- if and (not .Values.etcd.bundled.enabled) $e.auth.username }}
- name: etcd-auth
  mountPath: /etc/gpuplane/etcd-auth
  readOnly: true
{{- end }}
{{- end -}}

{{- define "gpuplane.etcdClientVolumes" -}}
{{- $e := .Values.etcd.external -}}
{{- if and (not .Values.etcd.bundled.enabled) $e.tls.secretName }}
- name: etcd-tls
  secret:
    secretName: {{ $e.tls.secretName }}
    defaultMode: 0400
    items:
      - key: ca.crt
        path: ca.crt
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if and (not .Values.etcd.bundled.enabled) $e.auth.username }}
- name: etcd-auth
  secret:
    secretName: {{ required "etcd.external.auth.passwordSecretName is required with etcd.external.auth.username" $e.auth.passwordSecretName }}
    defaultMode: 0400
    items:
      - key: password
        path: password
{{- end }}
{{- end -}}

{{- define "gpuplane.etcdEndpoints" -}}
{{- if .Values.etcd.bundled.enabled -}}
{{- $name := include "gpuplane.etcdName" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.bundled.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless.%s.svc:2379" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- required "etcd.external.endpoints is required when etcd.bundled.enabled is false" (join "," .Values.etcd.external.endpoints) -}}
{{- end -}}
{{- end -}}

{{- define "gpuplane.adminTokensSecret" -}}
{{- default (printf "%s-admin-tokens" (include "gpuplane.fullname" .)) .Values.adminTokens.existingSecret -}}
{{- end -}}

{{- define "gpuplane.secretKeySecret" -}}
{{- default (printf "%s-secret-key" (include "gpuplane.fullname" .)) .Values.secretKey.existingSecret -}}
{{- end -}}

{{/* public-url: apiServer.publicURL, else the first ingress host. */}}
{{- define "gpuplane.publicURL" -}}
{{- if .Values.apiServer.publicURL -}}
{{- .Values.apiServer.publicURL -}}
{{- else if and .Values.apiServer.ingress.enabled .Values.apiServer.ingress.hosts -}}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.apiServer.ingress.tls.secretName "")) (first .Values.apiServer.ingress.hosts) -}}
{{- end -}}
{{- end -}}

{{/* Pods of a component prefer different nodes unless the values give an affinity. */}}
{{- define "gpuplane.affinity" -}}
{{- if .affinity -}}
{{- toYaml .affinity -}}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "gpuplane.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end -}}
{{- end -}}

{{/*
A pod's annotations: the configuration checksum, Prometheus's scrape annotations when
metrics.scrapeAnnotations is on, then the values' podAnnotations (which win).
Takes (dict "ctx" . "port" PORT "scheme" "http"|"https" "extra" PODANNOTATIONS).
*/}}
{{- define "gpuplane.podAnnotations" -}}
{{- $ctx := .ctx -}}
{{- $annotations := dict "checksum/config" (include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum) -}}
{{- if $ctx.Values.metrics.scrapeAnnotations -}}
{{- $_ := set $annotations "prometheus.io/scrape" "true" -}}
{{- $_ := set $annotations "prometheus.io/port" (toString .port) -}}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" -}}
{{- $_ := set $annotations "prometheus.io/scheme" .scheme -}}
{{- end -}}
{{- toYaml (mergeOverwrite $annotations (.extra | default dict)) -}}
{{- end -}}
