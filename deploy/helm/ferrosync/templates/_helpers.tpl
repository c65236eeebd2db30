{{/* Labels the chart adds to every object (besides those of deploy/). */}}
{{- define "ferrosync.labels" -}}
app.kubernetes.io/part-of: ferrosync
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* repository:tag, or repository@digest. */}}
{{- define "ferrosync.image" -}}
{{- $image := index . 0 -}}
{{- $chart := index . 1 -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag | default $chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The documents of a multi-document YAML file shipped under files/, as maps. */}}
{{- define "ferrosync.documents" -}}
{{- $docs := list -}}
{{- range regexSplit "(?m)^---[ \t]*$" . -1 -}}
{{- $doc := fromYaml . -}}
{{- if $doc.kind -}}
{{- $docs = append $docs $doc -}}
{{- end -}}
{{- end -}}
{{- toJson $docs -}}
{{- end -}}

{{/* The rendered controller configuration, whose checksum rolls the Deployment. */}}
{{- define "ferrosync.config" -}}
# ferrosync controller configuration, from the chart's values; layered over the built-in
# defaults (config/default.toml). FERROSYNC_* environment variables override it.

[server]
# /healthz and /readyz; the probes use port 8080.
listen = "0.0.0.0:8080"

[metrics]
listen = "0.0.0.0:{{ .Values.metrics.port }}"
secure = true
{{- if .Values.metrics.certSecret }}
cert_file = "/etc/ferrosync/metrics-tls/tls.crt"
key_file = "/etc/ferrosync/metrics-tls/tls.key"
{{- end }}
self_signed_names = ["localhost", "ferrosync-controller-metrics.{{ .Release.Namespace }}.svc"]

[log]
format = {{ .Values.log.format | quote }}
level = {{ .Values.log.level | quote }}

[mover]
image = {{ include "ferrosync.image" (list .Values.mover.image .Chart) | quote }}
backoff_limit = {{ .Values.mover.backoffLimit }}
{{- with .Values.mover.imagePullSecrets }}
image_pull_secrets = [{{ range $i, $s := . }}{{ if $i }}, {{ end }}{{ $s | quote }}{{ end }}]
{{- end }}

[leader_election]
# Only the Lease holder reconciles.
enabled = true

[policy.oci]
# Bundles pulled from a registry, kept by digest in the pod's emptyDir.
cache_dir = "/var/cache/ferrosync/policy"
{{- range $point, $key := dict "copy_method" "copyMethod" "service_type" "serviceType" "psk" "psk" }}
{{- $p := index $.Values.policies $key }}
{{- if $p.bundle }}
{{- if not (has $p.bundle $.Values.policies.bundles) }}
{{- fail (printf "policies.%s.bundle %q is not in policies.bundles %v" $key $p.bundle $.Values.policies.bundles) }}
{{- end }}

[policy.{{ $point }}]
bundle = "/etc/ferrosync-policies/{{ $p.bundle }}"
on_failure = {{ $p.onFailure | quote }}
{{- end }}
{{- end }}
{{- with .Values.extraConfig }}

{{ . }}
{{- end }}
{{- end -}}
