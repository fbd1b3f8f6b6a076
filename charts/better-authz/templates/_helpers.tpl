{{/* Chart name, truncated to a DNS label. */}}
{{- define "better-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "better-authz.fullname" -}}
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

{{- define "better-authz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "better-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "better-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "better-authz.labels" -}}
helm.sh/chart: {{ include "better-authz.chart" . }}
{{ include "better-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: better-authz
{{- end }}

{{- define "better-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "better-authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "better-authz.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The environment as the ConfigMap carries it: .Values.config without empty values, with the
listen addresses derived from .Values.ports when unset. Returned as YAML (a dict).
*/}}
{{- define "better-authz.env" -}}
{{- $env := dict }}
{{- range $key, $value := .Values.config }}
{{- $v := toString $value }}
{{- if ne $v "" }}
{{- $_ := set $env $key $v }}
{{- end }}
{{- end }}
{{- include "better-authz.checkListeners" . }}
{{- if not .Values.grpc.enabled }}{{ $_ := set $env "AUTHZ_GRPC_ADDR" "off" }}{{ end }}
{{- if not .Values.http.enabled }}{{ $_ := set $env "AUTHZ_HTTP_ADDR" "off" }}{{ end }}
{{- if not (hasKey $env "AUTHZ_GRPC_ADDR") }}{{ $_ := set $env "AUTHZ_GRPC_ADDR" (printf "0.0.0.0:%v" .Values.ports.grpc) }}{{ end }}
{{- if not (hasKey $env "AUTHZ_HTTP_ADDR") }}{{ $_ := set $env "AUTHZ_HTTP_ADDR" (printf "0.0.0.0:%v" .Values.ports.http) }}{{ end }}
{{- if not (hasKey $env "AUTHZ_ADMIN_ADDR") }}{{ $_ := set $env "AUTHZ_ADMIN_ADDR" (printf "0.0.0.0:%v" .Values.ports.admin) }}{{ end }}
{{- if .Values.tls.secretName }}
{{- $_ := set $env "AUTHZ_TLS_CERT" "/etc/better-authz/tls/tls.crt" }}
{{- $_ := set $env "AUTHZ_TLS_KEY" "/etc/better-authz/tls/tls.key" }}
{{- if .Values.tls.requireClientCert }}
{{- $_ := set $env "AUTHZ_TLS_CLIENT_CA" "/etc/better-authz/tls/ca.crt" }}
{{- end }}
{{- end }}
{{- if .Values.policy }}
{{- if or (hasKey $env "AUTHZ_PUBLIC_PATHS") (hasKey $env "AUTHZ_USER_PATH_PATTERN") }}
{{- fail "policy is set: write config.AUTHZ_PUBLIC_PATHS and config.AUTHZ_USER_PATH_PATTERN as routes in it and leave them empty" }}
{{- end }}
{{- $_ := set $env "AUTHZ_POLICY_FILE" "/etc/better-authz/policy/policy.yaml" }}
{{- end }}
{{- if not (hasKey $env "BETTER_AUTH_URL") }}
{{- fail "config.BETTER_AUTH_URL is required: the base URL of your Better Auth server" }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* Fail when the preStop sleep plus the drain budget does not fit in the grace period. */}}
{{- define "better-authz.checkShutdown" -}}
{{- $drainMs := 10000 }}
{{- if ne (toString .Values.config.AUTHZ_SHUTDOWN_TIMEOUT_MS) "" }}
{{- $drainMs = atoi (toString .Values.config.AUTHZ_SHUTDOWN_TIMEOUT_MS) }}
{{- end }}
{{- $needMs := add (mul (int .Values.preStopSleepSeconds) 1000) $drainMs }}
{{- if ge (int $needMs) (mul (int .Values.terminationGracePeriodSeconds) 1000 | int) }}
{{- fail (printf "terminationGracePeriodSeconds (%v s) must exceed preStopSleepSeconds (%v s) + AUTHZ_SHUTDOWN_TIMEOUT_MS (%v ms), or pods are killed mid-drain" .Values.terminationGracePeriodSeconds .Values.preStopSleepSeconds $drainMs) }}
{{- end }}
{{- end }}

{{/*
Listener switches: at least one check listener stays on, and "off" goes through grpc.enabled /
http.enabled (which also drop the port), never through config.AUTHZ_*_ADDR alone.
*/}}
{{- define "better-authz.checkListeners" -}}
{{- if and (not .Values.grpc.enabled) (not .Values.http.enabled) }}
{{- fail "grpc.enabled and http.enabled are both false: a proxy could not ask anything; keep the listener your proxy uses (gRPC: Envoy, Istio, Envoy Gateway; HTTP: nginx, ingress-nginx, Traefik)" }}
{{- end }}
{{- range $key, $flag := dict "AUTHZ_GRPC_ADDR" "grpc.enabled" "AUTHZ_HTTP_ADDR" "http.enabled" }}
{{- if eq (lower (toString (index $.Values.config $key | default ""))) "off" }}
{{- fail (printf "config.%s is \"off\": set %s=false instead, which also removes the port from the container, the Services and the NetworkPolicy" $key $flag) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy: the namespaces admitted to the check ports, the release namespace first. Fails on
an empty proxyNamespaces: an upgrade must never silently cut the proxies off.
*/}}
{{- define "better-authz.proxyNamespaces" -}}
{{- $np := .Values.networkPolicy -}}
{{- if empty $np.ingress.proxyNamespaces }}
{{- fail "networkPolicy.ingress.proxyNamespaces is empty: list the namespaces your proxies run in (e.g. ingress-nginx, envoy-gateway-system, istio-system, istio-ingress, or your Envoy's), or set networkPolicy.enabled=false to admit every pod" }}
{{- end }}
{{- $list := list .Release.Namespace }}
{{- range $np.ingress.proxyNamespaces }}
{{- $list = append $list . }}
{{- end }}
{{- toYaml (uniq $list) }}
{{- end }}

{{/*
The headers better-authz sets on an allowed request, lower-case, comma-separated without
blanks: the identity headers (config.AUTHZ_HEADER_USER_*, else the binary's defaults), the JWT
header (config.AUTHZ_HEADER_JWT) and the names in config.AUTHZ_HEADER_MAP, each once. A proxy
that copies headers from the /auth answer (ingress-nginx auth-response-headers, Traefik
authResponseHeaders, nginx auth_request_set) must copy every one, and a route that skips the
check must remove every one.
*/}}
{{- define "better-authz.upstreamHeaders" -}}
{{- $c := .Values.config }}
{{- $names := list (toString $c.AUTHZ_HEADER_USER_ID | default "x-user-id") (toString $c.AUTHZ_HEADER_USER_EMAIL | default "x-user-email") (toString $c.AUTHZ_HEADER_USER_NAME | default "x-user-name") }}
{{- with toString ($c.AUTHZ_HEADER_JWT | default "") | trim }}
{{- $names = append $names . }}
{{- end }}
{{- range splitList "," (toString ($c.AUTHZ_HEADER_MAP | default "")) }}
{{- $name := splitList "=" . | first | trim }}
{{- if $name }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- $out := list }}
{{- range $names }}
{{- $out = append $out (lower (trim .)) }}
{{- end }}
{{- join "," (uniq $out) }}
{{- end }}

{{/* The same list as ingress-nginx's auth-response-headers wants it: "X-User-Id, X-User-Email, ...". */}}
{{- define "better-authz.authResponseHeaders" -}}
{{- $out := list }}
{{- range splitList "," (include "better-authz.upstreamHeaders" .) }}
{{- $out = append $out (title .) }}
{{- end }}
{{- join ", " $out }}
{{- end }}
