{{/* Chart name, truncated to 63 characters. */}}
{{- define "outbound-scim.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless the release name contains it. */}}
{{- define "outbound-scim.fullname" -}}
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

{{- define "outbound-scim.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "outbound-scim.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outbound-scim.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "outbound-scim.labels" -}}
helm.sh/chart: {{ include "outbound-scim.chart" . }}
{{ include "outbound-scim.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: outbound-scim
{{- end }}

{{- define "outbound-scim.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "outbound-scim.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "outbound-scim.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the security protocol uses SASL / TLS. */}}
{{- define "outbound-scim.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}
{{- define "outbound-scim.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/* Where the Kafka CA bundle is mounted. */}}
{{- define "outbound-scim.kafkaCaDir" -}}/etc/outbound-scim/kafka-ca{{- end }}

{{/* Where the egress CA bundle (downstreams, Keycloak) is mounted. */}}
{{- define "outbound-scim.egressCaDir" -}}/etc/outbound-scim/egress-ca{{- end }}

{{/* "true" when an egress CA bundle is configured (a Secret or a ConfigMap). */}}
{{- define "outbound-scim.egressCa" -}}
{{- if or .Values.egress.caBundle.secret .Values.egress.caBundle.configMap }}true{{ end }}
{{- end }}

{{/* "true" when the service gets Keycloak access (keycloak.url set). */}}
{{- define "outbound-scim.keycloak" -}}
{{- if .Values.keycloak.url }}true{{ end }}
{{- end }}

{{/* Secret name / key of each secret setting: the chart's Secret unless existingSecret is set. */}}
{{- define "outbound-scim.adminTokenSecretName" -}}
{{- default (include "outbound-scim.fullname" .) .Values.adminToken.existingSecret }}
{{- end }}
{{- define "outbound-scim.adminTokenSecretKey" -}}
{{- if .Values.adminToken.existingSecret }}{{ .Values.adminToken.existingSecretKey }}{{ else }}admin-token{{ end }}
{{- end }}
{{- define "outbound-scim.tokenKeySecretName" -}}
{{- default (include "outbound-scim.fullname" .) .Values.tokenKey.existingSecret }}
{{- end }}
{{- define "outbound-scim.tokenKeySecretKey" -}}
{{- if .Values.tokenKey.existingSecret }}{{ .Values.tokenKey.existingSecretKey }}{{ else }}token-key{{ end }}
{{- end }}
{{- define "outbound-scim.kafkaPasswordSecretName" -}}
{{- default (include "outbound-scim.fullname" .) .Values.kafka.sasl.existingSecret }}
{{- end }}
{{- define "outbound-scim.kafkaPasswordSecretKey" -}}
{{- if .Values.kafka.sasl.existingSecret }}{{ .Values.kafka.sasl.existingSecretKey }}{{ else }}kafka-sasl-password{{ end }}
{{- end }}
{{- define "outbound-scim.keycloakSecretName" -}}
{{- default (include "outbound-scim.fullname" .) .Values.keycloak.existingSecret }}
{{- end }}
{{- define "outbound-scim.keycloakSecretKey" -}}
{{- if .Values.keycloak.existingSecret }}{{ .Values.keycloak.existingSecretKey }}{{ else }}keycloak-client-secret{{ end }}
{{- end }}

{{/*
Required secrets, with what to set: the chart generates neither (a value rendered anew by every
`helm template` or GitOps sync would change on each one). The chart's Secret `required`s them.
*/}}
{{- define "outbound-scim.tokenKeyRequired" -}}
tokenKey: set tokenKey.existingSecret (recommended: a Secret created once, see the chart README) or tokenKey.value (outbound-scim gen-key). The chart does not generate the key: one rendered anew by every helm template or GitOps sync would make every stored downstream token unreadable.
{{- end }}
{{- define "outbound-scim.adminTokenRequired" -}}
adminToken: set adminToken.existingSecret (recommended) or adminToken.value (e.g. openssl rand -base64 36). The chart does not generate it: a token rendered anew by every helm template or GitOps sync would change under the operators' scripts.
{{- end }}

{{/* "true" when the chart renders its own Secret (some secret setting has no existingSecret). */}}
{{- define "outbound-scim.createSecret" -}}
{{- if or (not .Values.adminToken.existingSecret) (not .Values.tokenKey.existingSecret) (and (include "outbound-scim.kafkaSasl" .) (not .Values.kafka.sasl.existingSecret)) (and (include "outbound-scim.keycloak" .) (not .Values.keycloak.existingSecret)) }}true{{ end }}
{{- end }}

{{/* Replica bounds in force: "hpa", "keda" or "" (fixed replicaCount). */}}
{{- define "outbound-scim.scaler" -}}
{{- if .Values.keda.enabled }}keda{{ else if .Values.autoscaling.enabled }}hpa{{ end }}
{{- end }}

{{/* Label matchers of this release's metrics, for the PrometheusRule. */}}
{{- define "outbound-scim.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "outbound-scim.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Settings the chart renders itself; `config` must not set them again. */}}
{{- define "outbound-scim.managedSettings" -}}
{{- list "kafka_bootstrap_servers" "kafka_security_protocol" "kafka_sasl_mechanism" "kafka_sasl_username" "kafka_sasl_password" "kafka_ssl_cafile" "events_topic" "admin_events_topic" "changes_topic" "user_state_topic" "state_dir" "tenants_topic" "dead_letter_topic" "parking_topic" "replay_cursors_topic" "activity_topic" "internal_partitions" "internal_replication_factor" "group_id" "group_instance_id" "instance_id" "drain_timeout_seconds" "token_key" "admin_token" "keycloak_url" "keycloak_auth_realm" "keycloak_client_id" "keycloak_client_secret" "keycloak_authoritative" "allow_http_hosts" "allow_private_networks" "ca_bundle" "api_host" "api_port" "log_level" | toJson }}
{{- end }}

{{/*
Checks across values that the schema cannot express. Rendering fails with a message naming the
values to change. Included by the Deployment, so every render runs it.
*/}}
{{- define "outbound-scim.validate" -}}
{{- $v := .Values }}
{{- $partitions := int $v.partitions }}
{{- if and $v.autoscaling.enabled $v.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: KEDA creates and owns its own HorizontalPodAutoscaler. Enable one of them." }}
{{- end }}
{{- if $v.keda.enabled }}
{{- if gt (int $v.keda.maxReplicaCount) $partitions }}
{{- fail (printf "keda.maxReplicaCount (%d) exceeds partitions (%d): pods beyond the partition count of %s sit idle. Lower keda.maxReplicaCount or raise partitions." (int $v.keda.maxReplicaCount) $partitions $v.topics.changes) }}
{{- end }}
{{- if gt (int $v.keda.minReplicaCount) (int $v.keda.maxReplicaCount) }}
{{- fail (printf "keda.minReplicaCount (%d) exceeds keda.maxReplicaCount (%d)." (int $v.keda.minReplicaCount) (int $v.keda.maxReplicaCount)) }}
{{- end }}
{{- else if $v.autoscaling.enabled }}
{{- if gt (int $v.autoscaling.maxReplicas) $partitions }}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds partitions (%d): pods beyond the partition count of %s sit idle. Lower autoscaling.maxReplicas or raise partitions." (int $v.autoscaling.maxReplicas) $partitions $v.topics.changes) }}
{{- end }}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)." (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- else if gt (int $v.replicaCount) $partitions }}
{{- fail (printf "replicaCount (%d) exceeds partitions (%d): pods beyond the partition count of %s sit idle. Lower replicaCount or raise partitions." (int $v.replicaCount) $partitions $v.topics.changes) }}
{{- end }}
{{- if include "outbound-scim.kafkaSasl" . }}
{{- if not $v.kafka.sasl.mechanism }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)." $v.kafka.securityProtocol) }}
{{- end }}
{{- if not $v.kafka.sasl.username }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.username." $v.kafka.securityProtocol) }}
{{- end }}
{{- if and (not $v.kafka.sasl.password) (not $v.kafka.sasl.existingSecret) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.existingSecret (preferred) or kafka.sasl.password." $v.kafka.securityProtocol) }}
{{- end }}
{{- else if or $v.kafka.sasl.mechanism $v.kafka.sasl.username $v.kafka.sasl.password $v.kafka.sasl.existingSecret }}
{{- fail (printf "kafka.sasl.* is set but kafka.securityProtocol is %s: use SASL_SSL or SASL_PLAINTEXT, or clear kafka.sasl." $v.kafka.securityProtocol) }}
{{- end }}
{{- if and $v.kafka.tls.caSecret (not (include "outbound-scim.kafkaTls" .)) }}
{{- fail (printf "kafka.tls.caSecret is set but kafka.securityProtocol is %s: use SSL or SASL_SSL, or clear kafka.tls.caSecret." $v.kafka.securityProtocol) }}
{{- end }}
{{- if include "outbound-scim.keycloak" . }}
{{- if not $v.keycloak.clientId }}
{{- fail "keycloak.url is set: set keycloak.clientId (a confidential client whose service account holds view-users on the tenants' realms)." }}
{{- end }}
{{- if and (not $v.keycloak.clientSecret) (not $v.keycloak.existingSecret) }}
{{- fail "keycloak.url is set: set keycloak.existingSecret (preferred) or keycloak.clientSecret." }}
{{- end }}
{{- else if or $v.keycloak.clientId $v.keycloak.clientSecret $v.keycloak.existingSecret }}
{{- fail "keycloak.clientId / keycloak.clientSecret / keycloak.existingSecret is set but keycloak.url is empty: set keycloak.url, or clear the keycloak values." }}
{{- end }}
{{- if and $v.egress.caBundle.secret $v.egress.caBundle.configMap }}
{{- fail "egress.caBundle.secret and egress.caBundle.configMap are both set: the CA bundle comes from one of them. Clear the other." }}
{{- end }}
{{- if and (not (kindIs "invalid" $v.terminationGracePeriodSeconds)) (le (float64 $v.terminationGracePeriodSeconds) (float64 $v.drainTimeoutSeconds)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed drainTimeoutSeconds (%v), or the pod is killed while it drains." $v.terminationGracePeriodSeconds $v.drainTimeoutSeconds) }}
{{- end }}
{{- $pdb := $v.podDisruptionBudget }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.maxUnavailable) (kindIs "invalid" $pdb.minAvailable) }}
{{- fail "podDisruptionBudget.enabled: set podDisruptionBudget.maxUnavailable or podDisruptionBudget.minAvailable." }}
{{- end }}
{{- $managed := include "outbound-scim.managedSettings" . | fromJsonArray }}
{{- range $key, $_ := $v.config }}
{{- if has $key $managed }}
{{- fail (printf "config.%s: this setting is rendered by the chart from its own value; set that value instead (see the chart README)." $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: the explicit value, else drain + 15 s. */}}
{{- define "outbound-scim.terminationGrace" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int (ceil .Values.drainTimeoutSeconds)) 15 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* A scalar as an environment value: whole numbers without exponent (1000000, not 1e+06). */}}
{{- define "outbound-scim.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . | toString | quote }}
{{- else }}
{{- toString . | quote }}
{{- end }}
{{- end }}
