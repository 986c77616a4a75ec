{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "sic.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release full name: the release name, with the chart name unless it already contains it. */}}
{{- define "sic.fullname" -}}
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

{{- define "sic.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sic.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sic.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sic.labels" -}}
helm.sh/chart: {{ include "sic.chart" . }}
{{ include "sic.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: system-info-collector
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end }}

{{/* The namespace of every namespaced object. */}}
{{- define "sic.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/* imagePullSecrets entries from image.pullSecrets, imagePullSecrets and global.imagePullSecrets
     (each a name or a {name: ...} object), without duplicates. */}}
{{- define "sic.pullSecrets" -}}
{{- $names := list }}
{{- range concat (.Values.image.pullSecrets | default list) (.Values.imagePullSecrets | default list) ((.Values.global).imagePullSecrets | default list) }}
{{- $name := . }}{{ if kindIs "map" . }}{{ $name = .name }}{{ end }}
{{- if not (has $name $names) }}{{ $names = append $names $name }}{{ end }}
{{- end }}
{{- range $names }}
- name: {{ . }}
{{- end }}
{{- end }}

{{/* The label matchers the alerts and dashboards select the collector's series with. */}}
{{- define "sic.rulesSelector" -}}
{{- .Values.prometheus.rules.selector | default (printf "job=%q" (include "sic.name" .)) }}
{{- end }}

{{/* Relabelings that make `instance` and `node` the node's name (Service- and PodMonitor). */}}
{{- define "sic.nodeRelabelings" -}}
{{- if .Values.prometheus.nodeNameAsInstance }}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: instance
  action: replace
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
  action: replace
{{- end }}
{{- end }}

{{- define "sic.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sic.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag, registry/repository@digest or registry/repository:tag@digest. */}}
{{- define "sic.image" -}}
{{- $repo := .Values.image.repository }}
{{- $registry := (.Values.global).imageRegistry | default .Values.image.registry }}
{{- if $registry }}{{ $repo = printf "%s/%s" $registry $repo }}{{ end }}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- if .Values.image.tag }}{{ printf "%s:%s@%s" $repo $tag .Values.image.digest }}{{ else }}{{ printf "%s@%s" $repo .Values.image.digest }}{{ end }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/* The Secret holding the PostgreSQL DSN (and password). */}}
{{- define "sic.secretName" -}}
{{- default (printf "%s-postgres" (include "sic.fullname" .)) .Values.postgres.existingSecret }}
{{- end }}

{{- define "sic.passwordKey" -}}
{{- if .Values.postgres.existingSecret }}
{{- .Values.postgres.passwordKey }}
{{- else if .Values.postgres.password }}
{{- default "password" .Values.postgres.passwordKey }}
{{- end }}
{{- end }}

{{/* SIC_SINKS from the sinks' enabled flags. */}}
{{- define "sic.sinks" -}}
{{- $sinks := list }}
{{- if .Values.csv.enabled }}{{ $sinks = append $sinks "csv" }}{{ end }}
{{- if .Values.postgres.enabled }}{{ $sinks = append $sinks "postgres" }}{{ end }}
{{- if .Values.stdout.enabled }}{{ $sinks = append $sinks "stdout" }}{{ end }}
{{- if .Values.remoteWrite.enabled }}{{ $sinks = append $sinks "remote_write" }}{{ end }}
{{- if .Values.otlp.enabled }}{{ $sinks = append $sinks "otlp" }}{{ end }}
{{- if not $sinks }}{{ fail "enable at least one sink: csv.enabled, postgres.enabled, stdout.enabled, remoteWrite.enabled or otlp.enabled" }}{{ end }}
{{- join "," $sinks }}
{{- end }}

{{/* One `- name: X / value: "v"` entry; nothing when the value is empty. */}}
{{- define "sic.envVar" -}}
{{- $value := index . 1 | toString }}
{{- if ne $value "" }}
- name: {{ index . 0 }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Every SIC_ variable, from values. */}}
{{- define "sic.env" -}}
{{- $v := .Values -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: SIC_HOST_PROC
  value: /host/proc
- name: SIC_HOST_SYS
  value: /host/sys
- name: SIC_HOST_ROOT
  value: /host/root
- name: SIC_CSV_DIR
  value: /data
- name: SIC_SINKS
  value: {{ include "sic.sinks" . | quote }}
{{- include "sic.envVar" (list "SIC_INTERVAL" $v.interval) }}
{{- include "sic.envVar" (list "SIC_HOSTNAME" $v.hostname) }}
{{- if $v.tags }}
{{- $tags := list }}
{{- range $key, $value := $v.tags }}{{ $tags = append $tags (printf "%s=%v" $key $value) }}{{ end }}
{{- include "sic.envVar" (list "SIC_TAGS" (join "," $tags)) }}
{{- end }}
{{- include "sic.envVar" (list "SIC_SHUTDOWN_TIMEOUT" $v.shutdownTimeout) }}
{{- include "sic.envVar" (list "SIC_LOCK_TIMEOUT" $v.lockTimeout) }}
{{- include "sic.envVar" (list "SIC_STDOUT_LAYOUT" $v.stdout.layout) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE" $v.adaptive.mode) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_INTERVAL" $v.adaptive.interval) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_HOLD" $v.adaptive.hold) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_CPU_PERCENT" $v.adaptive.cpuPercent) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_MEMORY_PSI" $v.adaptive.memoryPsi) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_IO_PSI" $v.adaptive.ioPsi) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_DISK_BUSY_PERCENT" $v.adaptive.diskBusyPercent) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_JUMP" $v.adaptive.jump) }}
{{- include "sic.envVar" (list "SIC_ADAPTIVE_PSI_TRIGGERS" $v.adaptive.psiTriggers) }}
{{- include "sic.envVar" (list "SIC_OVERHEAD_BUDGET" $v.overhead.budget) }}
{{- include "sic.envVar" (list "SIC_OVERHEAD_WINDOW" $v.overhead.window) }}
{{- include "sic.envVar" (list "SIC_COLLECTORS" (join "," $v.collectors.enabled)) }}
{{- range $name := list "cpu" "memory" "disk" "diskio" "net" "system" "pressure" "vmstat" "filefd" "md" "timex" "bonding" "sockets" "netstat" }}
{{- include "sic.envVar" (list (printf "SIC_%s_INTERVAL" (upper $name)) (index $v.collectors.intervals $name | default "")) }}
{{- end }}
{{- include "sic.envVar" (list "SIC_DISK_MOUNTPOINTS_EXCLUDE" $v.collectors.disk.mountpointsExclude) }}
{{- include "sic.envVar" (list "SIC_DISK_FSTYPES_EXCLUDE" $v.collectors.disk.fstypesExclude) }}
{{- include "sic.envVar" (list "SIC_DISK_TIMEOUT" $v.collectors.disk.timeout) }}
{{- include "sic.envVar" (list "SIC_DISKIO_DEVICES_EXCLUDE" $v.collectors.diskio.devicesExclude) }}
{{- include "sic.envVar" (list "SIC_NET_INTERFACES_EXCLUDE" $v.collectors.net.interfacesExclude) }}
{{- include "sic.envVar" (list "SIC_CSV_ROTATE_SIZE" $v.csv.rotateSize) }}
{{- include "sic.envVar" (list "SIC_CSV_ROTATE_INTERVAL" $v.csv.rotateInterval) }}
{{- include "sic.envVar" (list "SIC_CSV_COMPRESS" $v.csv.compress) }}
{{- include "sic.envVar" (list "SIC_CSV_RETENTION" $v.csv.retention) }}
{{- include "sic.envVar" (list "SIC_CSV_MAX_TOTAL_SIZE" $v.csv.maxTotalSize) }}
{{- include "sic.envVar" (list "SIC_CSV_FSYNC" $v.csv.fsync) }}
{{- include "sic.envVar" (list "SIC_CSV_BACKLOG" (int64 $v.csv.backlog)) }}
{{- include "sic.envVar" (list "SIC_CSV_FILE_MODE" $v.csv.fileMode) }}
{{- include "sic.envVar" (list "SIC_BUFFER_MEMORY_MAX_SIZE" $v.buffers.memoryMaxSize) }}
{{- range $sink, $kind := $v.buffers.sinks }}
{{- include "sic.envVar" (list (printf "SIC_%s_BUFFER" (upper $sink)) $kind) }}
{{- end }}
{{- include "sic.envVar" (list "SIC_RETRY_MAX" (int64 $v.retry.maxAttempts)) }}
{{- include "sic.envVar" (list "SIC_RETRY_INITIAL" $v.retry.initial) }}
{{- include "sic.envVar" (list "SIC_RETRY_MAX_WAIT" $v.retry.maxWait) }}
{{- include "sic.envVar" (list "SIC_LOG_LEVEL" $v.logging.level) }}
{{- include "sic.envVar" (list "SIC_LOG_FORMAT" $v.logging.format) }}
- name: SIC_HTTP_LISTEN
  value: {{ printf ":%d" (int64 $v.http.port) | quote }}
- name: SIC_PROMETHEUS_HOST_METRICS
  value: {{ $v.http.hostMetrics | toString | quote }}
{{- if $v.textfile.enabled }}
- name: SIC_TEXTFILE_DIRECTORY
  value: /host/textfile
{{- end }}
{{- if $v.http.tls.enabled }}
{{- if not $v.http.tls.existingSecret }}{{ fail "http.tls.enabled needs http.tls.existingSecret (a Secret with tls.crt and tls.key)" }}{{ end }}
- name: SIC_HTTP_TLS_CERT_FILE
  value: /etc/system-info-collector/tls/tls.crt
- name: SIC_HTTP_TLS_KEY_FILE
  value: /etc/system-info-collector/tls/tls.key
{{- if $v.http.tls.clientCAKey }}
- name: SIC_HTTP_TLS_CLIENT_CA_FILE
  value: /etc/system-info-collector/tls/{{ $v.http.tls.clientCAKey }}
{{- end }}
{{- end }}
{{- if $v.http.basicAuth.enabled }}
{{- if not $v.http.basicAuth.existingSecret }}{{ fail "http.basicAuth.enabled needs http.basicAuth.existingSecret (a Secret with htpasswd -nbB lines)" }}{{ end }}
- name: SIC_HTTP_BASIC_AUTH_FILE
  value: /etc/system-info-collector/basic-auth/{{ $v.http.basicAuth.key }}
{{- end }}
{{- if $v.postgres.enabled }}
- name: SIC_DB_DSN
  valueFrom:
    secretKeyRef:
      name: {{ include "sic.secretName" . }}
      key: {{ $v.postgres.dsnKey }}
{{- if include "sic.passwordKey" . }}
- name: SIC_DB_PASSWORD_FILE
  value: /etc/system-info-collector/postgres/password
{{- end }}
{{- include "sic.envVar" (list "SIC_DB_SCHEMA" $v.postgres.schema) }}
{{- include "sic.envVar" (list "SIC_DB_BATCH_MAX_ROWS" (int64 $v.postgres.batchMaxRows)) }}
{{- include "sic.envVar" (list "SIC_DB_FLUSH_INTERVAL" $v.postgres.flushInterval) }}
{{- include "sic.envVar" (list "SIC_DB_CONNECT_TIMEOUT" $v.postgres.connectTimeout) }}
{{- include "sic.envVar" (list "SIC_DB_STATEMENT_TIMEOUT" $v.postgres.statementTimeout) }}
{{- include "sic.envVar" (list "SIC_DB_SPOOL_DIR" $v.postgres.spoolDir) }}
{{- include "sic.envVar" (list "SIC_DB_SPOOL_MAX_SIZE" $v.postgres.spoolMaxSize) }}
{{- include "sic.envVar" (list "SIC_DB_TIMESCALE" $v.postgres.timescale) }}
{{- include "sic.envVar" (list "SIC_DB_PARTITION_INTERVAL" $v.postgres.partitionInterval) }}
{{- include "sic.envVar" (list "SIC_DB_RETENTION" $v.postgres.retention) }}
{{- end }}
{{- if $v.remoteWrite.enabled }}
{{- $rw := $v.remoteWrite }}
{{- if not $rw.url }}{{ fail "remoteWrite.enabled needs remoteWrite.url" }}{{ end }}
{{- include "sic.envVar" (list "SIC_REMOTE_WRITE_URL" $rw.url) }}
{{- include "sic.envVar" (list "SIC_REMOTE_WRITE_TIMEOUT" $rw.timeout) }}
{{- include "sic.envVar" (list "SIC_REMOTE_WRITE_BASIC_AUTH_USER" $rw.basicAuthUser) }}
{{- with $v.remoteWrite.tls }}
{{- if and (or .caKey .certKey .keyKey) (not $v.remoteWrite.existingSecret) }}{{ fail "remoteWrite.tls keys need remoteWrite.existingSecret" }}{{ end }}
{{- if .caKey }}
- name: SIC_REMOTE_WRITE_TLS_CA_FILE
  value: /etc/system-info-collector/remote-write/{{ .caKey }}
{{- end }}
{{- if .certKey }}
- name: SIC_REMOTE_WRITE_TLS_CERT_FILE
  value: /etc/system-info-collector/remote-write/{{ .certKey }}
{{- end }}
{{- if .keyKey }}
- name: SIC_REMOTE_WRITE_TLS_KEY_FILE
  value: /etc/system-info-collector/remote-write/{{ .keyKey }}
{{- end }}
{{- include "sic.envVar" (list "SIC_REMOTE_WRITE_TLS_INSECURE_SKIP_VERIFY" (.insecureSkipVerify | default false)) }}
{{- end }}
{{- if $rw.existingSecret }}
{{- if $rw.bearerTokenKey }}
- name: SIC_REMOTE_WRITE_BEARER_TOKEN_FILE
  value: /etc/system-info-collector/remote-write/{{ $rw.bearerTokenKey }}
{{- end }}
{{- if $rw.basicAuthPasswordKey }}
- name: SIC_REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE
  value: /etc/system-info-collector/remote-write/{{ $rw.basicAuthPasswordKey }}
{{- end }}
{{- if $rw.headersKey }}
- name: SIC_REMOTE_WRITE_HEADERS_FILE
  value: /etc/system-info-collector/remote-write/{{ $rw.headersKey }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.otlp.enabled }}
{{- if not $v.otlp.endpoint }}{{ fail "otlp.enabled needs otlp.endpoint" }}{{ end }}
{{- include "sic.envVar" (list "SIC_OTLP_ENDPOINT" $v.otlp.endpoint) }}
{{- include "sic.envVar" (list "SIC_OTLP_TIMEOUT" $v.otlp.timeout) }}
{{- include "sic.envVar" (list "SIC_OTLP_COMPRESSION" $v.otlp.compression) }}
{{- if and $v.otlp.existingSecret $v.otlp.headersKey }}
- name: SIC_OTLP_HEADERS_FILE
  value: /etc/system-info-collector/otlp/{{ $v.otlp.headersKey }}
{{- end }}
{{- with $v.otlp.tls }}
{{- if and (or .caKey .certKey .keyKey) (not $v.otlp.existingSecret) }}{{ fail "otlp.tls keys need otlp.existingSecret" }}{{ end }}
{{- if .caKey }}
- name: SIC_OTLP_TLS_CA_FILE
  value: /etc/system-info-collector/otlp/{{ .caKey }}
{{- end }}
{{- if .certKey }}
- name: SIC_OTLP_TLS_CERT_FILE
  value: /etc/system-info-collector/otlp/{{ .certKey }}
{{- end }}
{{- if .keyKey }}
- name: SIC_OTLP_TLS_KEY_FILE
  value: /etc/system-info-collector/otlp/{{ .keyKey }}
{{- end }}
{{- include "sic.envVar" (list "SIC_OTLP_TLS_INSECURE_SKIP_VERIFY" (.insecureSkipVerify | default false)) }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A probe from values: HTTPS with http.tls.enabled; with mutual TLS (the kubelet holds no
client certificate) the port is only opened. */}}
{{- define "sic.probe" -}}
{{- $root := index . 0 }}
{{- $probe := deepCopy (index . 1) }}
{{- $tls := $root.Values.http.tls }}
{{- if and $tls.enabled $probe.httpGet }}
{{- if $tls.clientCAKey }}
{{- $probe = set (omit $probe "httpGet") "tcpSocket" (dict "port" $probe.httpGet.port) }}
{{- else }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}
