{{/*
Names. Namespaced objects are named from the release; cluster-scoped objects also carry
the release namespace so that two releases with the same name in different namespaces
never collide.
*/}}
{{- define "kaito.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.fullname" -}}
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

{{- define "kaito.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "kaito.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kaito.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kaito.webhookServiceName" -}}
{{- printf "%s-webhook" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.webhookSecretName" -}}
{{- printf "%s-webhook-cert" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kaito.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kaito.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kaito
{{- end }}

{{/* A full image reference from the images block: registry/repository:tag. */}}
{{- define "kaito.image" -}}
{{- $images := index . 0 }}
{{- printf "%s/%s:%s" $images.registry (index $images (index . 1)) $images.tag }}
{{- end }}

{{/*
The webhook serving certificate as YAML (ca, cert, key; base64 PEM): reused from the
existing Secret on upgrade, otherwise a new self-signed CA and a serving certificate for
the webhook Service's DNS names. Generated once per render and memoised, so the Secret,
the ValidatingWebhookConfiguration's caBundle and the pod's checksum agree.
*/}}
{{- define "kaito.webhookCert" -}}
{{- if not (hasKey .Release "kaitoWebhookCert") }}
{{- $secretName := include "kaito.webhookSecretName" . }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName }}
{{- $data := dict }}
{{- if and $existing $existing.data }}
{{- $data = $existing.data }}
{{- end }}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") }}
{{- $_ := set .Release "kaitoWebhookCert" (dict "ca" (index $data "ca.crt") "cert" (index $data "tls.crt") "key" (index $data "tls.key")) }}
{{- else }}
{{- $service := include "kaito.webhookServiceName" . }}
{{- $dns := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) }}
{{- $days := int .Values.webhook.certValidityDays }}
{{- $ca := genCA (printf "%s-ca" $service) $days }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $service .Release.Namespace) nil $dns $days $ca }}
{{- $_ := set .Release "kaitoWebhookCert" (dict "ca" ($ca.Cert | b64enc) "cert" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc)) }}
{{- end }}
{{- end }}
{{- toYaml (get .Release "kaitoWebhookCert") }}
{{- end }}
