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

{{/* TLS on the listener ---------------------------------------------------------------------------- */}}
{{- define "runtime-glue.tlsSecretName" -}}
{{- default (printf "%s-listener-tls" (include "runtime-glue.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{/* "true" when an endpoint asks senders for a client certificate (mTLS). */}}
{{- define "runtime-glue.mtls" -}}
{{- range .Values.config.endpoints | default list -}}
{{- if hasKey . "clientCert" -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* Where the tls volume is mounted: the files server.tls names. */}}
{{- define "runtime-glue.tlsMountPath" -}}/var/run/glue-tls{{- end -}}

{{/* A probe, told to speak HTTPS when the listener does (the kubelet does not verify the certificate). */}}
{{- define "runtime-glue.probe" -}}
{{- $probe := deepCopy .probe -}}
{{- if and .tls $probe.httpGet (not $probe.httpGet.scheme) -}}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" -}}
{{- end -}}
{{- toYaml $probe -}}
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
{{- $journal := .Values.journal.settings | default dict -}}
{{- if eq .Values.journal.backend "sqlite" -}}
{{- range $key := list "poolSize" -}}
{{- if hasKey $journal $key -}}
{{- fail (printf "journal.settings.%s applies to journal.backend=postgres only" $key) -}}
{{- end -}}
{{- end -}}
{{- else if hasKey $journal "synchronous" -}}
{{- fail "journal.settings.synchronous applies to journal.backend=sqlite only" -}}
{{- end -}}
{{- $sources := .Values.config.sources | default dict -}}
{{- if and .Values.config.archive (not $sources.minio) -}}
{{- fail "config.archive needs config.sources.minio (the connection to its bucket)" -}}
{{- end -}}
{{- with $sources.minio -}}
{{- if and .caFile (not (ternary true .secure (kindIs "invalid" .secure))) -}}
{{- fail "config.sources.minio.caFile needs secure: true (the CA verifies MinIO's HTTPS certificate)" -}}
{{- end -}}
{{- end -}}
{{- $server := .Values.config.server | default dict -}}
{{- $execution := .Values.config.execution | default dict -}}
{{- $drain := addf (ternary $server.shutdownTimeout 10 (hasKey $server "shutdownTimeout")) (ternary $execution.drainSeconds 10 (hasKey $execution "drainSeconds")) -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $drain -}}
{{- fail (printf "terminationGracePeriodSeconds %d is not longer than the drain (config.server.shutdownTimeout + config.execution.drainSeconds = %gs): the pod would be killed before in-flight invocations finish" (int .Values.terminationGracePeriodSeconds) $drain) -}}
{{- end -}}
{{- if and (include "runtime-glue.mtls" .) (not .Values.tls.enabled) -}}
{{- fail "an endpoint has clientCert: it needs tls.enabled (client certificates come with HTTPS)" -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.tls.certificate.create (not .Values.tls.certificate.issuerRef.name) -}}
{{- fail "tls.certificate.create needs tls.certificate.issuerRef.name (the cert-manager Issuer or ClusterIssuer)" -}}
{{- end -}}
{{- include "runtime-glue.checkMountedFiles" . -}}
{{- end -}}

{{/* Every file the config reads under secretsMountPath is one the secrets volume mounts: a typo, or a
Secret left out of secretFiles, fails the render instead of the pod's start. */}}
{{- define "runtime-glue.checkMountedFiles" -}}
{{- $config := .Values.config -}}
{{- $sources := $config.sources | default dict -}}
{{- $refs := dict -}}
{{- $files := dict -}}
{{- range $index, $endpoint := $config.endpoints | default list -}}
{{- if and $endpoint.auth $endpoint.auth.secret -}}
{{- $_ := set $refs (printf "config.endpoints[%d].auth.secret" $index) $endpoint.auth.secret -}}
{{- end -}}
{{- end -}}
{{- with $sources.kafka -}}
{{- if .sasl -}}
{{- $_ := set $refs "config.sources.kafka.sasl.password" .sasl.password -}}
{{- end -}}
{{- with .tls -}}
{{- $tls := . -}}
{{- range $key := list "caFile" "certFile" "keyFile" -}}
{{- if get $tls $key -}}
{{- $_ := set $files (printf "config.sources.kafka.tls.%s" $key) (get $tls $key) -}}
{{- end -}}
{{- end -}}
{{- if .keyPassword -}}
{{- $_ := set $refs "config.sources.kafka.tls.keyPassword" .keyPassword -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with $sources.argoEvents -}}
{{- if .auth -}}
{{- $_ := set $files "config.sources.argoEvents.auth.file" .auth.file -}}
{{- end -}}
{{- with .tls -}}
{{- $tls := . -}}
{{- range $key := list "caFile" "certFile" "keyFile" -}}
{{- if get $tls $key -}}
{{- $_ := set $files (printf "config.sources.argoEvents.tls.%s" $key) (get $tls $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with $sources.jetstream -}}
{{- if .auth -}}
{{- $_ := set $files "config.sources.jetstream.auth.file" .auth.file -}}
{{- end -}}
{{- with .tls -}}
{{- $tls := . -}}
{{- range $key := list "caFile" "certFile" "keyFile" -}}
{{- if get $tls $key -}}
{{- $_ := set $files (printf "config.sources.jetstream.tls.%s" $key) (get $tls $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with $sources.minio -}}
{{- $minio := . -}}
{{- if .caFile -}}
{{- $_ := set $files "config.sources.minio.caFile" .caFile -}}
{{- end -}}
{{- range $key := list "accessKey" "secretKey" "sessionToken" -}}
{{- if get $minio $key -}}
{{- $_ := set $refs (printf "config.sources.minio.%s" $key) (get $minio $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $where, $ref := $refs -}}
{{- range $key := list "file" "previousFile" -}}
{{- if get $ref $key -}}
{{- $_ := set $files (printf "%s.%s" $where $key) (get $ref $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $mount := printf "%s/" (trimSuffix "/" .Values.secretsMountPath) -}}
{{- $mounted := keys .Values.secretFiles -}}
{{- if eq .Values.journal.backend "postgres" -}}
{{- if has "journal-dsn" $mounted -}}
{{- fail "secretFiles: journal-dsn is the file the chart mounts from journal.postgres.dsnSecret; use another name" -}}
{{- end -}}
{{- $mounted = append $mounted "journal-dsn" -}}
{{- end -}}
{{- range $where, $path := $files -}}
{{- if hasPrefix $mount $path -}}
{{- $name := trimPrefix $mount $path -}}
{{- if not (has $name $mounted) -}}
{{- fail (printf "%s: %s is not mounted: add %q to secretFiles (the Secret and key it comes from)" $where $path $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Handlers and RBAC ------------------------------------------------------------------------------
The same grants as `glue rbac` (glue/rbac.py), from the rules in rbac.handlerRules:
- an enabled route whose params.namespace is a literal needs its handler's namespaced rules in that
  namespace only (a Role there);
- a route whose namespace comes from a template (or that has none) may act anywhere: its rules go to
  the ClusterRole, and so do the rules a handler marks cluster-scoped;
- a rule with `each: P` is needed once per item of the list parameter P, for the item's kind in the
  item's literal namespace (an OpenBao rotation's `restart` workloads; none: no grant);
- a rule marked cancelOnly (a handler's cancel step) is granted to routes whose concurrencyGroup
  has onConflict: cancel only;
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
{{- $route := .name -}}
{{- /* (namespace or "", rule) pairs: a rule's own, or one per item of its `each` list parameter */ -}}
{{- $targets := list -}}
{{- $group := .concurrencyGroup | default dict -}}
{{- $cancels := eq (toString $group.onConflict) "cancel" -}}
{{- range $rule := ($entry.namespaced | default list) -}}
{{- if or $cancels (not $rule.cancelOnly) -}}{{- /* a cancel step's rule: cancelling routes only */ -}}
{{- $plain := dict "apiGroups" $rule.apiGroups "resources" $rule.resources "verbs" $rule.verbs -}}
{{- $items := list $params -}}
{{- if $rule.each -}}
{{- $items = get $params $rule.each | default list -}}
{{- if kindIs "string" $items -}}{{- /* a list rendered from the event: anywhere, every resource */ -}}
{{- $items = list "" -}}
{{- end -}}
{{- end -}}
{{- range $item := $items -}}
{{- $narrowed := $plain -}}
{{- $namespace := "" -}}
{{- if kindIs "map" $item -}}
{{- with $rule.narrowBy -}}
{{- $value := get $item .param | default .default -}}
{{- if and (kindIs "string" $value) (not (contains "{{" $value)) (not (contains "{%" $value)) (hasKey .resources $value) -}}
{{- $narrowed = dict "apiGroups" $rule.apiGroups "resources" (list (get .resources $value)) "verbs" $rule.verbs -}}
{{- end -}}
{{- end -}}
{{- if and (kindIs "string" $item.namespace) $item.namespace (not (contains "{" $item.namespace)) -}}
{{- $namespace = $item.namespace -}}
{{- end -}}
{{- end -}}
{{- $targets = append $targets (list $namespace $narrowed) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $anywhere := false -}}
{{- if $entry.cluster -}}
{{- $anywhere = true -}}
{{- include "runtime-glue.addPermissions" (list $cluster $entry.cluster) -}}
{{- end -}}
{{- range $target := $targets -}}
{{- $namespace := index $target 0 -}}
{{- if not $namespace -}}
{{- $anywhere = true -}}
{{- include "runtime-glue.addPermissions" (list $cluster (list (index $target 1))) -}}
{{- else -}}
{{- $into := get $spaced $namespace | default dict -}}
{{- include "runtime-glue.addPermissions" (list $into (list (index $target 1))) -}}
{{- $_ := set $spaced $namespace $into -}}
{{- $names := get $spacedRoutes $namespace | default list -}}
{{- if not (has $route $names) -}}
{{- $_ := set $spacedRoutes $namespace (append $names $route) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $anywhere -}}
{{- $clusterRoutes = append $clusterRoutes $route -}}
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

{{/* Egress ------------------------------------------------------------------------------------------
The services the config talks to, each with the TCP ports the config names, as JSON:
[{"what": "...", "ports": [int...], "to": [NetworkPolicyPeer...]}]. */}}
{{- define "runtime-glue.egress" -}}
{{- $egress := .Values.networkPolicy.egress -}}
{{- $config := .Values.config -}}
{{- $sources := $config.sources | default dict -}}
{{- $clients := $config.clients | default dict -}}
{{- $rules := list -}}
{{- $grants := include "runtime-glue.grants" . | fromJson -}}
{{- if and (or $grants.cluster $grants.namespaces (hasKey $clients "kubernetes")) $egress.kubernetesApi.ports -}}
{{- $rules = append $rules (dict "what" "the Kubernetes API" "ports" $egress.kubernetesApi.ports "to" $egress.kubernetesApi.to) -}}
{{- end -}}
{{- with (get $clients "openbao") -}}
{{- if .address -}}
{{- $rules = append $rules (dict "what" "OpenBao (clients.openbao.address)" "ports" (list (include "runtime-glue.urlPort" .address)) "to" $egress.openbao.to) -}}
{{- end -}}
{{- end -}}
{{- with (get $clients "argo-server") -}}
{{- if .url -}}
{{- $rules = append $rules (dict "what" "the Argo Server (clients.argo-server.url)" "ports" (list (include "runtime-glue.urlPort" .url)) "to" $egress.argoServer.to) -}}
{{- end -}}
{{- end -}}
{{- with $sources.kafka -}}
{{- $servers := .bootstrapServers -}}
{{- if kindIs "string" $servers -}}
{{- $servers = splitList "," $servers -}}
{{- end -}}
{{- $ports := list -}}
{{- range $servers -}}
{{- if trim . -}}
{{- $ports = append $ports (include "runtime-glue.hostPort" (list (trim .) 9092)) -}}
{{- end -}}
{{- end -}}
{{- $rules = append $rules (dict "what" "Kafka (sources.kafka.bootstrapServers)" "ports" (concat $ports $egress.kafka.ports) "to" $egress.kafka.to) -}}
{{- end -}}
{{- with $sources.argoEvents -}}
{{- $urls := .url -}}
{{- if kindIs "string" $urls -}}
{{- $urls = splitList "," $urls -}}
{{- end -}}
{{- $ports := list -}}
{{- range $urls -}}
{{- if trim . -}}
{{- $ports = append $ports (regexFind ":[0-9]+$" (urlParse (trim .)).host | trimPrefix ":" | default "4222") -}}
{{- end -}}
{{- end -}}
{{- $rules = append $rules (dict "what" "the Argo Events EventBus (sources.argoEvents.url)" "ports" (uniq $ports) "to" $egress.argoEvents.to) -}}
{{- end -}}
{{- with $sources.jetstream -}}
{{- $urls := .url -}}
{{- if kindIs "string" $urls -}}
{{- $urls = splitList "," $urls -}}
{{- end -}}
{{- $ports := list -}}
{{- range $urls -}}
{{- if trim . -}}
{{- $ports = append $ports (regexFind ":[0-9]+$" (urlParse (trim .)).host | trimPrefix ":" | default "4222") -}}
{{- end -}}
{{- end -}}
{{- $rules = append $rules (dict "what" "JetStream (sources.jetstream.url)" "ports" (uniq $ports) "to" $egress.jetstream.to) -}}
{{- end -}}
{{- with $sources.minio -}}
{{- $secure := ternary true .secure (kindIs "invalid" .secure) -}}
{{- $rules = append $rules (dict "what" "MinIO (sources.minio.endpoint)" "ports" (list (include "runtime-glue.hostPort" (list .endpoint (ternary 443 80 $secure)))) "to" $egress.minio.to) -}}
{{- end -}}
{{- if and (eq .Values.journal.backend "postgres") $egress.postgres.ports -}}
{{- $rules = append $rules (dict "what" "PostgreSQL (the journal)" "ports" $egress.postgres.ports "to" $egress.postgres.to) -}}
{{- end -}}
{{- $http := list -}}
{{- range $config.routes | default list -}}
{{- $enabled := ternary true .enabled (kindIs "invalid" .enabled) -}}
{{- if and $enabled (eq .handler "http") -}}
{{- $url := (.params | default dict).url | default "" -}}
{{- if and (kindIs "string" $url) $url (not (contains "{" $url)) -}}
{{- $http = append $http (include "runtime-glue.urlPort" $url) -}}
{{- else -}}
{{- $http = concat $http (list 80 443) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $http -}}
{{- $rules = append $rules (dict "what" "the http handler's URLs" "ports" $http "to" $egress.http.to) -}}
{{- end -}}
{{- with ($config.tracing | default dict).endpoint -}}
{{- $rules = append $rules (dict "what" "the OTLP endpoint (config.tracing.endpoint)" "ports" (list (include "runtime-glue.urlPort" .)) "to" $egress.tracing.to) -}}
{{- end -}}
{{- $result := list -}}
{{- range $rules -}}
{{- $ports := list -}}
{{- range .ports -}}
{{- $ports = append $ports (int .) -}}
{{- end -}}
{{- $result = append $result (dict "what" .what "ports" ($ports | uniq) "to" (.to | default list)) -}}
{{- end -}}
{{- $result | toJson -}}
{{- end -}}

{{/* The port of a URL: its own, else 80 for http and 443 for https. */}}
{{- define "runtime-glue.urlPort" -}}
{{- $url := urlParse . -}}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" -}}
{{- if $port -}}
{{- $port -}}
{{- else if eq $url.scheme "http" -}}
80
{{- else -}}
443
{{- end -}}
{{- end -}}

{{/* The port of "host[:port]" (or "[v6]:port"), else the default. Argument: (list address default). */}}
{{- define "runtime-glue.hostPort" -}}
{{- $port := regexFind ":[0-9]+$" (index . 0) | trimPrefix ":" -}}
{{- $port | default (index . 1) -}}
{{- end -}}

{{/* The glue config ----------------------------------------------------------------------------------
.Values.config with the server address and the journal connection the chart manages. */}}
{{/* The admin API's port (config.admin.port, default 8081); empty without config.admin. */}}
{{- define "runtime-glue.adminPort" -}}
{{- with .Values.config.admin -}}{{ hasKey . "port" | ternary .port 8081 }}{{- end -}}
{{- end -}}

{{- define "runtime-glue.config" -}}
{{- $config := deepCopy (omit .Values.config "journal") -}}
{{- $server := deepCopy (.Values.config.server | default dict) -}}
{{- $_ := set $server "host" .Values.listenAddress -}}
{{- $_ := set $server "port" (int .Values.containerPort) -}}
{{- if .Values.tls.enabled -}}
{{- $mount := include "runtime-glue.tlsMountPath" . -}}
{{- $tls := dict "certFile" (printf "%s/tls.crt" $mount) "keyFile" (printf "%s/tls.key" $mount) "reloadSeconds" .Values.tls.reloadSeconds -}}
{{- if include "runtime-glue.mtls" . -}}
{{- $_ := set $tls "clientCaFile" (printf "%s/client-ca.crt" $mount) -}}
{{- end -}}
{{- $_ := set $server "tls" $tls -}}
{{- end -}}
{{- $_ := set $config "server" $server -}}
{{- with .Values.config.admin -}}
{{- $admin := deepCopy . -}}
{{- $_ := set $admin "host" ($admin.host | default $.Values.listenAddress) -}}
{{- $_ := set $admin "port" (include "runtime-glue.adminPort" $ | int) -}}
{{- $_ := set $config "admin" $admin -}}
{{- end -}}
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

{{/* The OpenBao policy (HCL) the enabled routes need, as `glue policy openbao` prints it (glue/rbac.py
openbao_policy), from rbac.openbaoPaths: each handler's paths, their `{param}` fields filled from the
route's params or the handler's defaults (a value rendered from the event becomes `*` at the end of
the path, `+` before it), `{ledger}` from clients.openbao.ledger. Empty when no route calls OpenBao. */}}
{{- define "runtime-glue.openbaoPolicy" -}}
{{- $bao := (.Values.config.clients | default dict).openbao | default dict -}}
{{- $ledgerConfig := $bao.ledger | default dict -}}
{{- $ledger := printf "%s/data/%s" ($ledgerConfig.mount | default "secret") ($ledgerConfig.prefix | default "runtime-glue/rotations") -}}
{{- $found := dict -}}
{{- $order := list -}}
{{- range .Values.config.routes -}}
{{- $entry := get $.Values.rbac.openbaoPaths .handler -}}
{{- $enabled := ternary true .enabled (kindIs "invalid" .enabled) -}}
{{- if and $enabled $entry -}}
{{- $route := .name -}}
{{- $values := merge (deepCopy (.params | default dict)) ($entry.defaults | default dict) -}}
{{- $_ := set $values "ledger" $ledger -}}
{{- range $needed := $entry.paths -}}
{{- $template := $needed.path -}}
{{- $fields := regexFindAll "\\{[A-Za-z_][A-Za-z0-9_]*\\}" $template -1 -}}
{{- $path := $template -}}
{{- range $index, $field := $fields -}}
{{- $name := trimSuffix "}" (trimPrefix "{" $field) -}}
{{- $value := get $values $name -}}
{{- $filled := "" -}}
{{- if or (not (hasKey $values $name)) (not (kindIs "string" $value)) (contains "{{" (toString $value)) (contains "{%" (toString $value)) -}}
{{- $filled = ternary "*" "+" (and (eq $index (sub (len $fields) 1)) (hasSuffix $field $template)) -}}
{{- else -}}
{{- $filled = trimAll "/" $value -}}
{{- end -}}
{{- $path = replace $field $filled $path -}}
{{- end -}}
{{- $path = regexReplaceAll "/+" $path "/" -}}
{{- $seen := get $found $path | default (dict "capabilities" list "routes" list) -}}
{{- $_ := set $seen "capabilities" (concat $seen.capabilities $needed.capabilities | uniq) -}}
{{- if not (has $route $seen.routes) -}}
{{- $_ := set $seen "routes" (append $seen.routes $route) -}}
{{- end -}}
{{- $_ := set $found $path $seen -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $found -}}
{{- $known := list "create" "read" "update" "patch" "delete" "list" "sudo" -}}
# The OpenBao policy the routes need (glue policy openbao). The token also uses the default
# policy's auth/token/lookup-self, renew-self and revoke-self.
{{- range $path := keys $found | sortAlpha }}
{{- $seen := get $found $path }}
{{- $capabilities := list }}
{{- range $known }}{{ if has . $seen.capabilities }}{{ $capabilities = append $capabilities . }}{{ end }}{{ end }}
{{- range sortAlpha $seen.capabilities }}{{ if not (has . $known) }}{{ $capabilities = append $capabilities . }}{{ end }}{{ end }}

# routes: {{ join ", " $seen.routes }}
path "{{ $path }}" {
  capabilities = [{{ range $i, $c := $capabilities }}{{ if $i }}, {{ end }}"{{ $c }}"{{ end }}]
}
{{- end }}
{{- end -}}
{{- end -}}
