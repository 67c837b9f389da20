{{- define "aifirewall.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aifirewall.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aifirewall.labels" -}}
{{ include "aifirewall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "aifirewall.check" -}}
{{- if not (has .Values.mode (list "gateway" "sidecar" "extproc")) -}}
{{- fail (printf "mode: %q is not gateway, sidecar or extproc" .Values.mode) -}}
{{- end -}}
{{- if not .Values.secret.name -}}
{{- fail "secret.name: name the Secret holding the internal API key (and provider keys); see the chart's README section" -}}
{{- end -}}
{{- if not .Values.redis.url -}}
{{- fail "redis.url: the budgets live in Redis; give its URL (redis://, rediss://, redis+sentinel://, redis+cluster://)" -}}
{{- end -}}
{{- if and .Values.ledger.url .Values.ledger.urlSecretKey -}}
{{- fail "ledger: set ledger.url (e.g. sqlite:///var/lib/aifirewall/ledger.db) or ledger.urlSecretKey (a postgres:// URL with its password, in the Secret), not both" -}}
{{- end -}}
{{- if and .Values.ledger.url (hasPrefix "postgres" .Values.ledger.url) (contains "@" .Values.ledger.url) -}}
{{- fail "ledger.url: a postgres:// URL with credentials belongs in the Secret: put it under a key of secret.name and name that key in ledger.urlSecretKey" -}}
{{- end -}}
{{- if eq .Values.identityMode "jwt" -}}
{{- if eq .Values.mode "extproc" -}}
{{- fail "identityMode: jwt is verified by the chart's own Envoy (gateway or sidecar mode); in front of extproc, give your gateway a jwt_authn filter forwarding its metadata (README, Identities)" -}}
{{- end -}}
{{- if or (not .Values.jwt.issuer) (not .Values.jwt.audiences) (not .Values.jwt.jwksConfigMap) -}}
{{- fail "identityMode: jwt needs jwt.issuer, jwt.audiences and jwt.jwksConfigMap (a ConfigMap with jwks.json, your identity provider's keys)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.identityMode "mesh") (ne .Values.mode "extproc") -}}
{{- fail "identityMode: mesh needs the calling workloads' client certificates, and the chart's Envoy serves plain HTTP without verifying any; run mode=extproc behind the Istio egress gateway (deploy/istio), or use identityMode shared or keys" -}}
{{- end -}}
{{- if eq .Values.mode "extproc" -}}
{{- $tls := .Values.extproc.tls -}}
{{- if and (not .Values.extproc.authenticatedByMesh) (or (not $tls.secretName) (not $tls.allowedClients)) -}}
{{- fail "extproc: whoever reaches the ext_proc port admits requests and names identities; set extproc.tls.secretName and extproc.tls.allowedClients (mutual TLS), or extproc.authenticatedByMesh=true behind Istio's mTLS and the AuthorizationPolicy of deploy/istio" -}}
{{- end -}}
{{- if and (or .Values.istio.egressGateway.enabled .Values.istio.meshSidecars.enabled) (not .Values.providers) -}}
{{- fail "istio: the mesh objects are rendered from the providers file; set providers (with hosts for each provider)" -}}
{{- end -}}
{{- if and .Values.istio.egressGateway.enabled .Values.istio.meshSidecars.enabled -}}
{{- fail "istio: egressGateway and meshSidecars are two ways to put the firewall in front of workloads; enable one" -}}
{{- end -}}
{{- if and .Values.istio.meshSidecars.enabled (not .Values.istio.meshSidecars.clientNamespaces) -}}
{{- fail "istio.meshSidecars.clientNamespaces: name the namespaces whose workloads call providers (the only ones the firewall answers; they can obtain the provider keys)" -}}
{{- end -}}
{{- else if or .Values.istio.egressGateway.enabled .Values.istio.meshSidecars.enabled -}}
{{- fail "istio: only mode=extproc serves Istio's proxies" -}}
{{- else if .Values.extproc.sendsProviderKeys -}}
{{- fail "extproc.sendsProviderKeys: only mode=extproc (Istio's every-sidecar variant) may send provider keys over ext_proc; the chart's Envoy puts them on itself" -}}
{{- end -}}
{{- end -}}

{{/* Where Envoy (and the sidecar, with extproc.sendsProviderKeys) reads provider keys: environment variables from the Secret and the Secret mounted for api_key_file. */}}
{{- define "aifirewall.keyEnv" -}}
{{- $v := .Values -}}
{{- if not $v.providers }}
{{ include "aifirewall.secretEnv" (dict "name" "UPSTREAM_API_KEY" "secret" $v.secret.name "key" $v.secret.upstreamAPIKeyKey "optional" true) }}
{{- end }}
{{- range $name, $key := $v.secret.providerKeyEnv }}
{{ include "aifirewall.secretEnv" (dict "name" $name "secret" $v.secret.name "key" $key "optional" false) }}
{{- end }}
{{- end -}}

{{/* Settings Envoy's configuration is generated from: no secret among them. */}}
{{- define "aifirewall.routingEnv" -}}
{{- if .Values.providers }}
- name: PROVIDERS_FILE
  value: /etc/aifirewall/providers.yaml
{{- else }}
- name: UPSTREAM_BASE_URL
  value: {{ .Values.upstream.baseURL | quote }}
{{- with .Values.upstream.provider }}
- name: UPSTREAM_PROVIDER
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: MAX_REQUEST_BODY_BYTES
  value: {{ .Values.maxRequestBodyBytes | int64 | quote }}
- name: EXTPROC_ADDR
  value: unix:/run/aifirewall/extproc.sock
{{- include "aifirewall.jwtEnv" . }}
{{- end -}}

{{/* IDENTITY_MODE=jwt: what the chart's Envoy verifies and the claims the sidecar reads. */}}
{{- define "aifirewall.jwtEnv" -}}
{{- if eq .Values.identityMode "jwt" }}
- name: JWT_ISSUER
  value: {{ .Values.jwt.issuer | quote }}
- name: JWT_AUDIENCES
  value: {{ join "," .Values.jwt.audiences | quote }}
- name: JWT_JWKS_FILE
  value: /etc/aifirewall-jwks/jwks.json
- name: JWT_USER_CLAIM
  value: {{ .Values.jwt.userClaim | quote }}
- name: JWT_GROUPS_CLAIM
  value: {{ .Values.jwt.groupsClaim | quote }}
{{- end }}
{{- end -}}

{{- define "aifirewall.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
      optional: {{ .optional }}
{{- end -}}

{{/* The three containers; native: the two long-running ones are native sidecars. */}}
{{- define "aifirewall.containers" -}}
{{- $ := .root -}}
{{- $v := $.Values -}}
{{- $image := include "aifirewall.image" $ -}}
{{- $sec := $v.secret.name -}}
{{- $listen := ternary "127.0.0.1:8000" "0.0.0.0:8000" .native -}}
envoyConfig:
  name: envoy-config
  image: {{ $image | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["envoy-config", "-o", "/etc/envoy/envoy.yaml"]
  env:
    - name: ENV_FILE
      value: /nonexistent
    {{- if eq $v.identityMode "jwt" }}
    - name: IDENTITY_MODE
      value: jwt
    {{- end }}
    - name: ENVOY_LISTEN_ADDR
      value: {{ $listen | quote }}
    - name: ENVOY_ADMIN_ADDR
      value: 127.0.0.1:9901
    - name: ENVOY_HEALTH_ADDR
      value: 0.0.0.0:9902
    - name: ENVOY_MAX_STREAMS
      value: {{ $v.envoyLimits.maxStreams | int64 | quote }}
    - name: ENVOY_MAX_DOWNSTREAM_CONNECTIONS
      value: {{ $v.envoyLimits.maxDownstreamConnections | int64 | quote }}
    - name: ENVOY_MAX_HEAP_BYTES
      value: {{ $v.envoyLimits.maxHeapBytes | int64 | quote }}
    {{- include "aifirewall.routingEnv" $ | nindent 4 }}
    {{- include "aifirewall.keyEnv" $ | nindent 4 }}
  securityContext: {{- include "aifirewall.containerSecurity" $ | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 32Mi}
    limits: {memory: 64Mi}
  volumeMounts:
    - {name: envoy-config, mountPath: /etc/envoy}
    # To check that every provider key is there before Envoy starts.
    - {name: provider-keys, mountPath: {{ $v.secret.mountPath }}, readOnly: true}
    {{- if $v.providers }}
    - {name: providers, mountPath: /etc/aifirewall, readOnly: true}
    {{- end }}
aifirewall:
  name: aifirewall
  image: {{ $image | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  args: ["serve"]
  env:
    - name: ENV_FILE
      value: /nonexistent
    - name: LISTEN_ADDR
      value: {{ ternary "0.0.0.0:50051" "unix:/run/aifirewall/extproc.sock" (eq $v.mode "extproc") }}
    {{- if eq $v.mode "extproc" }}
    {{- if $v.extproc.tls.secretName }}
    - name: EXTPROC_TLS_CERT_FILE
      value: /etc/aifirewall/extproc-tls/tls.crt
    - name: EXTPROC_TLS_KEY_FILE
      value: /etc/aifirewall/extproc-tls/tls.key
    - name: EXTPROC_TLS_CLIENT_CA_FILE
      value: /etc/aifirewall/extproc-tls/{{ $v.extproc.tls.caKey }}
    - name: EXTPROC_TLS_ALLOWED_CLIENTS
      value: {{ join "," $v.extproc.tls.allowedClients | quote }}
    {{- else }}
    - name: EXTPROC_AUTHENTICATED_BY_MESH
      value: "true"
    {{- end }}
    {{- if $v.extproc.sendsProviderKeys }}
    - name: PROVIDER_KEYS_IN_EXTPROC
      value: "true"
    {{- end }}
    {{- end }}
    - name: ADMIN_ADDR
      value: 0.0.0.0:9090
    - name: SPOOL_FILE
      value: /var/lib/aifirewall/settlements.jsonl
    - name: SHUTDOWN_TIMEOUT
      value: "{{ $v.shutdownTimeoutSeconds }}s"
    - name: SHUTDOWN_MIN_DRAIN
      value: "{{ $v.shutdownMinDrainSeconds }}s"
    {{- if ne $v.mode "extproc" }}
    # At SIGTERM the sidecar drains the pod's Envoy through its admin
    # interface (loopback, in the pod), answers it until its requests are
    # done, then ends it: kept-alive clients are told to go elsewhere and no
    # request fails.
    - name: ENVOY_ADMIN_URL
      value: http://127.0.0.1:9901
    {{- end }}
    {{- if $v.budgets }}
    - name: BUDGETS_FILE
      value: /etc/aifirewall-budgets/budgets.yaml
    {{- end }}
    - name: IDENTITY_MODE
      value: {{ $v.identityMode | quote }}
    - name: TRUST_XFCC
      value: {{ $v.trustXFCC | quote }}
    {{- with $v.meshGroups }}
    - name: MESH_GROUPS
      value: {{ join "," . | quote }}
    {{- end }}
    - name: DAILY_BUDGET_LIMIT
      value: {{ $v.dailyBudgetLimit | quote }}
    - name: STREAM_CUTOFF
      value: {{ $v.streamCutoff | quote }}
    - name: BUDGET_TIMEZONE
      value: {{ $v.budgetTimezone | quote }}
    - name: FAIL_MODE
      value: {{ $v.failMode | quote }}
    - name: LOG_LEVEL
      value: {{ $v.logLevel | quote }}
    {{- include "aifirewall.routingEnv" $ | nindent 4 }}
    {{- include "aifirewall.secretEnv" (dict "name" "INTERNAL_API_KEY" "secret" $sec "key" $v.secret.internalAPIKeyKey "optional" (eq $v.identityMode "mesh")) | nindent 4 }}
    {{- include "aifirewall.secretEnv" (dict "name" "ADMIN_TOKEN" "secret" $sec "key" $v.secret.adminTokenKey "optional" true) | nindent 4 }}
    {{- include "aifirewall.secretEnv" (dict "name" "REDIS_PASSWORD" "secret" $sec "key" $v.secret.redisPasswordKey "optional" true) | nindent 4 }}
    {{- if $v.ledger.urlSecretKey }}
    {{- include "aifirewall.secretEnv" (dict "name" "LEDGER_URL" "secret" $sec "key" $v.ledger.urlSecretKey "optional" false) | nindent 4 }}
    {{- else if $v.ledger.url }}
    - name: LEDGER_URL
      value: {{ $v.ledger.url | quote }}
    {{- end }}
    {{- if $v.extproc.sendsProviderKeys }}
    {{- include "aifirewall.keyEnv" $ | nindent 4 }}
    {{- end }}
    - name: REDIS_URL
      value: {{ $v.redis.url | quote }}
    {{- if $v.redis.waitReplicas }}
    - name: REDIS_WAIT_REPLICAS
      value: {{ $v.redis.waitReplicas | quote }}
    {{- end }}
    {{- if $v.redis.caConfigMap }}
    - name: REDIS_CA_FILE
      value: /etc/aifirewall/redis-ca/ca.crt
    {{- end }}
    {{- range $name, $value := $v.extraEnv }}
    - name: {{ $name }}
      value: {{ $value | quote }}
    {{- end }}
  ports:
    - {name: metrics, containerPort: 9090}
    {{- if eq $v.mode "extproc" }}
    - {name: grpc, containerPort: 50051}
    {{- end }}
  startupProbe:
    httpGet: {path: /healthz, port: 9090}
    periodSeconds: 1
    failureThreshold: 60
  readinessProbe:
    httpGet: {path: /readyz, port: 9090}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /healthz, port: 9090}
    periodSeconds: 10
  # No preStop: at SIGTERM it drains Envoy at once (Envoy's readiness
  # fails, so the Service stops sending) and answers it meanwhile.
  securityContext: {{- include "aifirewall.containerSecurity" $ | nindent 4 }}
  resources: {{- toYaml $v.resources.aifirewall | nindent 4 }}
  volumeMounts:
    - {name: run, mountPath: /run/aifirewall}
    - {name: spool, mountPath: /var/lib/aifirewall}
    {{- if $v.extproc.sendsProviderKeys }}
    - {name: provider-keys, mountPath: {{ $v.secret.mountPath }}, readOnly: true}
    {{- end }}
    {{- if and (eq $v.mode "extproc") $v.extproc.tls.secretName }}
    - {name: extproc-tls, mountPath: /etc/aifirewall/extproc-tls, readOnly: true}
    {{- end }}
    {{- if $v.providers }}
    - {name: providers, mountPath: /etc/aifirewall, readOnly: true}
    {{- end }}
    {{- if $v.redis.caConfigMap }}
    - {name: redis-ca, mountPath: /etc/aifirewall/redis-ca, readOnly: true}
    {{- end }}
    {{- if $v.budgets }}
    # Mounted whole (no subPath): an edited ConfigMap reaches the file and
    # the sidecar re-reads it, without a restart.
    - {name: budgets, mountPath: /etc/aifirewall-budgets, readOnly: true}
    {{- end }}
envoy:
  name: envoy
  image: "{{ $v.envoyImage.repository }}:{{ $v.envoyImage.tag }}"
  imagePullPolicy: {{ $v.envoyImage.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  # Drained (by the sidecar, at SIGTERM), Envoy tells every client at once
  # to reconnect elsewhere and takes new connections for the whole drain.
  command: ["envoy", "-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart", "--log-level", "warning",
    "--drain-strategy", "immediate", "--drain-time-s", "{{ $v.shutdownTimeoutSeconds }}"]
  # Envoy holds the provider keys and puts them on requests after the
  # sidecar has seen them (the SDS files envoy-config wrote say where).
  {{- with include "aifirewall.keyEnv" $ }}
  env: {{- . | nindent 4 }}
  {{- end }}
  ports:
    - {name: http, containerPort: 8000}
    - {name: envoy-health, containerPort: 9902}
  startupProbe:
    httpGet: {path: /ready, port: 9902}
    periodSeconds: 1
    failureThreshold: 60
  readinessProbe:
    httpGet: {path: /ready, port: 9902}
    periodSeconds: 5
  livenessProbe:
    tcpSocket: {port: 9902}
    periodSeconds: 10
  lifecycle:
    preStop:
      # Envoy exits at SIGTERM: it waits here while the sidecar drains it
      # (and ends it once its requests are done).
      sleep: {seconds: {{ ternary 5 (add $v.shutdownTimeoutSeconds 5) .native }}}
  securityContext: {{- include "aifirewall.containerSecurity" $ | nindent 4 }}
  resources: {{- toYaml $v.resources.envoy | nindent 4 }}
  volumeMounts:
    - {name: envoy-config, mountPath: /etc/envoy, readOnly: true}
    - {name: run, mountPath: /run/aifirewall}
    - {name: tmp, mountPath: /tmp}
    - {name: provider-keys, mountPath: {{ $v.secret.mountPath }}, readOnly: true}
    {{- if eq $v.identityMode "jwt" }}
    # The identity provider's keys, read by Envoy's jwt_authn at start.
    - {name: jwks, mountPath: /etc/aifirewall-jwks, readOnly: true}
    {{- end }}
{{- end -}}

{{- define "aifirewall.containerSecurity" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "aifirewall.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.registry -}}
{{ printf "%s/%s:%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository $tag }}
{{- else -}}
{{ printf "%s:%s" .Values.image.repository $tag }}
{{- end -}}
{{- end -}}

{{- define "aifirewall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "aifirewall.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "aifirewall.volumes" -}}
- name: envoy-config
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
- name: run
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
- name: spool
  emptyDir: {sizeLimit: {{ .Values.gateway.spool.sizeLimit }}}
- name: provider-keys
  secret: {secretName: {{ .Values.secret.name }}}
{{- if and (eq .Values.mode "extproc") .Values.extproc.tls.secretName }}
- name: extproc-tls
  secret: {secretName: {{ .Values.extproc.tls.secretName }}}
{{- end }}
{{- if .Values.providers }}
- name: providers
  configMap: {name: {{ include "aifirewall.fullname" . }}-providers}
{{- end }}
{{- if .Values.redis.caConfigMap }}
- name: redis-ca
  configMap: {name: {{ .Values.redis.caConfigMap }}}
{{- end }}
{{- if .Values.budgets }}
- name: budgets
  configMap: {name: {{ include "aifirewall.fullname" . }}-budgets}
{{- end }}
{{- if eq .Values.identityMode "jwt" }}
- name: jwks
  configMap: {name: {{ .Values.jwt.jwksConfigMap }}}
{{- end }}
{{- end -}}

{{- define "aifirewall.podSecurity" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{/* The ext_proc filter Istio's proxies run, calling this release's Service: the settings of the generated configuration (a test holds them equal). */}}
{{- define "aifirewall.istioExtProc" -}}
"@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
grpc_service:
  envoy_grpc:
    cluster_name: outbound|50051||{{ include "aifirewall.fullname" . }}.{{ .Release.Namespace }}.svc.cluster.local
failure_mode_allow: false
processing_mode:
  request_header_mode: SEND
  request_body_mode: BUFFERED
  request_trailer_mode: SKIP
  response_header_mode: SEND
  response_body_mode: STREAMED
  response_trailer_mode: SKIP
allow_mode_override: true
allow_content_length_header: true
message_timeout: 10s
max_message_timeout: 30s
status_on_error: {code: ServiceUnavailable}
stat_prefix: aifirewall
request_attributes: [connection.uri_san_peer_certificate]
metadata_options:
  receiving_namespaces:
    untyped: [aifirewall]
{{- end -}}
