{{/* Names ---------------------------------------------------------------------------------------- */}}
{{- define "runtime-glue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runtime-glue.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "runtime-glue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runtime-glue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runtime-glue.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "runtime-glue.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: daemon
{{- end -}}

{{- define "runtime-glue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "runtime-glue.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "runtime-glue.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Checks that values.schema.json cannot express ----------------------------------------------- */}}
{{- define "runtime-glue.validate" -}}
{{- if and (eq .Values.journal.backend "sqlite") (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "replicaCount %d needs journal.backend=postgres: the SQLite journal is one file on one volume" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (eq .Values.journal.backend "postgres") (not .Values.journal.postgres.dsnSecret.name) -}}
{{- fail "journal.backend=postgres needs journal.postgres.dsnSecret.name (the Secret holding the DSN)" -}}
{{- end -}}
{{- if hasKey .Values.config "journal" -}}
{{- fail "config.journal is managed by the chart: set journal.backend, journal.postgres.dsnSecret and journal.settings instead" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)" -}}
{{- end -}}
{{- end -}}

{{/* Handlers and RBAC ------------------------------------------------------------------------------
The handlers the routes use, sorted and unique, as a JSON list. */}}
{{- define "runtime-glue.handlerNames" -}}
{{- $names := list -}}
{{- range .Values.config.routes -}}
{{- $names = append $names .handler -}}
{{- end -}}
{{- $names | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/* The PolicyRules of those handlers (rbac.handlerRules) plus rbac.extraRules, as JSON:
{"namespaced": [...], "cluster": [...]}. */}}
{{- define "runtime-glue.rbacRules" -}}
{{- $namespaced := list -}}
{{- $cluster := list -}}
{{- range $name := include "runtime-glue.handlerNames" . | fromJsonArray -}}
{{- if not (hasKey $.Values.rbac.handlerRules $name) -}}
{{- fail (printf "route handler %q has no entry in rbac.handlerRules: add the rules `glue rbac` prints for it (an empty map if it needs none)" $name) -}}
{{- end -}}
{{- $entry := get $.Values.rbac.handlerRules $name | default dict -}}
{{- $namespaced = concat $namespaced ($entry.namespaced | default list) -}}
{{- $cluster = concat $cluster ($entry.cluster | default list) -}}
{{- end -}}
{{- $namespaced = concat $namespaced (.Values.rbac.extraRules | default list) -}}
{{- dict "namespaced" (uniq $namespaced) "cluster" (uniq $cluster) | toJson -}}
{{- end -}}

{{- define "runtime-glue.automountToken" -}}
{{- if kindIs "bool" .Values.serviceAccount.automountToken -}}
{{- .Values.serviceAccount.automountToken -}}
{{- else -}}
{{- $rules := include "runtime-glue.rbacRules" . | fromJson -}}
{{- $clients := .Values.config.clients | default dict -}}
{{- or (gt (len $rules.namespaced) 0) (gt (len $rules.cluster) 0) (hasKey $clients "openbao") (hasKey $clients "kubernetes") -}}
{{- end -}}
{{- end -}}

{{/* The glue config ----------------------------------------------------------------------------------
.Values.config with the server address and the journal connection the chart manages. */}}
{{- define "runtime-glue.config" -}}
{{- $config := deepCopy (omit .Values.config "journal") -}}
{{- $server := deepCopy (.Values.config.server | default dict) -}}
{{- $_ := set $server "host" "0.0.0.0" -}}
{{- $_ := set $server "port" (int .Values.containerPort) -}}
{{- $_ := set $config "server" $server -}}
{{- $journal := deepCopy (.Values.journal.settings | default dict) -}}
{{- $_ := set $journal "backend" .Values.journal.backend -}}
{{- if eq .Values.journal.backend "postgres" -}}
{{- $_ := set $journal "dsn" (dict "file" (printf "%s/journal-dsn" .Values.secretsMountPath)) -}}
{{- else -}}
{{- $_ := set $journal "path" "/var/lib/glue/glue.db" -}}
{{- end -}}
{{- $_ := set $config "journal" $journal -}}
{{- toYaml $config -}}
{{- end -}}

{{/* PolicyRules with only the fields Kubernetes knows. */}}
{{- define "runtime-glue.policyRules" -}}
{{- range . }}
- apiGroups: {{ .apiGroups | toJson }}
  resources: {{ .resources | toJson }}
  verbs: {{ .verbs | toJson }}
  {{- with .resourceNames }}
  resourceNames: {{ . | toJson }}
  {{- end }}
{{- end }}
{{- end -}}
