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
The same grants as `glue rbac` (glue/rbac.py), from the rules in rbac.handlerRules:
- an enabled route whose params.namespace is a literal needs its handler's namespaced rules in that
  namespace only (a Role there);
- a route whose namespace comes from a template (or that has none) may act anywhere: its rules go to
  the ClusterRole, and so do the rules a handler marks cluster-scoped;
- a Role does not repeat what the ClusterRole grants.
Result, as JSON: {"cluster": [PolicyRule...], "namespaces": {"<ns>": [PolicyRule...]},
"clusterRoutes": [...], "routes": {"<ns>": [...]}}. */}}
{{- define "runtime-glue.grants" -}}
{{- $cluster := dict -}}
{{- $clusterRoutes := list -}}
{{- $spaced := dict -}}
{{- $spacedRoutes := dict -}}
{{- range .Values.config.routes -}}
{{- if not (hasKey $.Values.rbac.handlerRules .handler) -}}
{{- fail (printf "route handler %q has no entry in rbac.handlerRules: add the rules its handler declares (python -m tests.deploy.handler_rules prints them; an empty map if it needs none)" .handler) -}}
{{- end -}}
{{- $entry := get $.Values.rbac.handlerRules .handler | default dict -}}
{{- $enabled := ternary true .enabled (kindIs "invalid" .enabled) -}}
{{- if and $enabled (or $entry.namespaced $entry.cluster) -}}
{{- $params := .params | default dict -}}
{{- $namespace := "" -}}
{{- if and (kindIs "string" $params.namespace) $params.namespace (not (contains "{" $params.namespace)) -}}
{{- $namespace = $params.namespace -}}
{{- end -}}
{{- if or $entry.cluster (not $namespace) -}}
{{- $clusterRoutes = append $clusterRoutes .name -}}
{{- end -}}
{{- include "runtime-glue.addPermissions" (list $cluster ($entry.cluster | default list)) -}}
{{- if not $namespace -}}
{{- include "runtime-glue.addPermissions" (list $cluster ($entry.namespaced | default list)) -}}
{{- else if $entry.namespaced -}}
{{- $into := get $spaced $namespace | default dict -}}
{{- include "runtime-glue.addPermissions" (list $into $entry.namespaced) -}}
{{- $_ := set $spaced $namespace $into -}}
{{- $_ := set $spacedRoutes $namespace (append (get $spacedRoutes $namespace | default list) .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $namespaces := dict -}}
{{- $routes := dict -}}
{{- range $namespace, $permissions := $spaced -}}
{{- $remaining := dict -}}
{{- range $key, $verbs := $permissions -}}
{{- $granted := get $cluster $key | default list -}}
{{- $left := list -}}
{{- range $verbs -}}
{{- if not (has . $granted) -}}
{{- $left = append $left . -}}
{{- end -}}
{{- end -}}
{{- if $left -}}
{{- $_ := set $remaining $key $left -}}
{{- end -}}
{{- end -}}
{{- if $remaining -}}
{{- $_ := set $namespaces $namespace (include "runtime-glue.mergeRules" $remaining | fromJsonArray) -}}
{{- $_ := set $routes $namespace (get $spacedRoutes $namespace) -}}
{{- end -}}
{{- end -}}
{{- dict "cluster" (include "runtime-glue.mergeRules" $cluster | fromJsonArray) "namespaces" $namespaces "clusterRoutes" $clusterRoutes "routes" $routes | toJson -}}
{{- end -}}

{{/* Add the permissions of a list of PolicyRules to a dict "<apiGroup>\x00<resource>" -> [verbs].
Argument: (list $dict $rules). */}}
{{- define "runtime-glue.addPermissions" -}}
{{- $into := index . 0 -}}
{{- range $rule := (index . 1) -}}
{{- range $group := $rule.apiGroups -}}
{{- range $resource := $rule.resources -}}
{{- $key := printf "%s\x00%s" $group $resource -}}
{{- $_ := set $into $key (concat (get $into $key | default list) $rule.verbs | uniq) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* PolicyRules from a dict "<apiGroup>\x00<resource>" -> [verbs], as glue/rbac.py merge() builds them:
verbs in kubectl's order, resources with the same verbs grouped, sorted by (apiGroup, verbs). JSON list. */}}
{{- define "runtime-glue.mergeRules" -}}
{{- $order := list "get" "list" "watch" "create" "update" "patch" "delete" "deletecollection" -}}
{{- $grouped := dict -}}
{{- range $key, $verbs := . -}}
{{- $parts := splitList "\x00" $key -}}
{{- $ordered := list -}}
{{- range $order -}}
{{- if has . $verbs -}}
{{- $ordered = append $ordered . -}}
{{- end -}}
{{- end -}}
{{- $unknown := list -}}
{{- range $verbs -}}
{{- if not (has . $order) -}}
{{- $unknown = append $unknown . -}}
{{- end -}}
{{- end -}}
{{- $ordered = concat $ordered ($unknown | sortAlpha) -}}
{{- $groupKey := printf "%s\x00%s" (index $parts 0) (join "\x00" $ordered) -}}
{{- $_ := set $grouped $groupKey (append (get $grouped $groupKey | default list) (index $parts 1)) -}}
{{- end -}}
{{- $rules := list -}}
{{- range $groupKey := keys $grouped | sortAlpha -}}
{{- $parts := splitList "\x00" $groupKey -}}
{{- $rules = append $rules (dict "apiGroups" (list (first $parts)) "resources" (get $grouped $groupKey | sortAlpha) "verbs" (rest $parts)) -}}
{{- end -}}
{{- $rules | toJson -}}
{{- end -}}

{{- define "runtime-glue.automountToken" -}}
{{- if kindIs "bool" .Values.serviceAccount.automountToken -}}
{{- .Values.serviceAccount.automountToken -}}
{{- else -}}
{{- $grants := include "runtime-glue.grants" . | fromJson -}}
{{- $clients := .Values.config.clients | default dict -}}
{{- if or $grants.cluster $grants.namespaces (hasKey $clients "openbao") (hasKey $clients "kubernetes") -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The glue config ----------------------------------------------------------------------------------
.Values.config with the server address and the journal connection the chart manages. */}}
{{- define "runtime-glue.config" -}}
{{- $config := deepCopy (omit .Values.config "journal") -}}
{{- $server := deepCopy (.Values.config.server | default dict) -}}
{{- $_ := set $server "host" .Values.listenAddress -}}
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
