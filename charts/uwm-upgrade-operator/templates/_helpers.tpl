{{/* The chart's name (63 characters at most). */}}
{{- define "uwm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, the base of every object name. */}}
{{- define "uwm.fullname" -}}
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

{{- define "uwm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's objects carry component=operator, the demo estate's component=demo-estate. */}}
{{- define "uwm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "uwm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "uwm.commonLabels" -}}
helm.sh/chart: {{ include "uwm.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: uwm-upgrade-operator
{{- end -}}

{{- define "uwm.labels" -}}
{{ include "uwm.commonLabels" . }}
{{ include "uwm.selectorLabels" . }}
{{- end -}}

{{- define "uwm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "uwm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag of an image value, the tag defaulting to the chart's appVersion. */}}
{{- define "uwm.image" -}}
{{- printf "%s:%s" .image.repository (toString (default .root.Chart.AppVersion .image.tag)) -}}
{{- end -}}

{{/* The watched namespaces, one per line: watchNamespaces, or the release namespace when empty. */}}
{{- define "uwm.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "\n" .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Refuses values that contradict each other (the schema checks each value alone). */}}
{{- define "uwm.validate" -}}
{{- if and .Values.clusterWide .Values.watchNamespaces -}}
{{- fail "clusterWide: true watches every namespace; leave watchNamespaces empty (or set clusterWide: false)" -}}
{{- end -}}
{{- if .Values.networkPolicy.enabled -}}
{{- if not .Values.networkPolicy.apiServer.cidrs -}}
{{- fail "networkPolicy.enabled needs networkPolicy.apiServer.cidrs (the API server's addresses: kubectl get endpoints kubernetes -n default)" -}}
{{- end -}}
{{- if not (or .Values.serverPolicy.allowedCIDRs .Values.demoEstate.enabled) -}}
{{- fail "networkPolicy.enabled needs serverPolicy.allowedCIDRs (the servers' addresses: the NetworkPolicy lets the operator reach only those)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.approvalPolicy.enabled (not .Values.approvalPolicy.approverGroups) -}}
{{- fail "approvalPolicy.enabled needs approvalPolicy.approverGroups (the groups whose members may approve plans)" -}}
{{- end -}}
{{- end -}}

{{/* Plain http for the token-bearing calls: asked for, or needed by the demo estate's simulators. */}}
{{- define "uwm.insecureHttp" -}}
{{- if or .Values.serverPolicy.allowInsecureHttp .Values.demoEstate.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The only permissions the operator needs (no wildcards): kopf watches and patches UpgradePlans and their
status, the reconciler reads the Secrets a plan references and posts events.k8s.io Events, kopf posts
its own core Events, and the replicas elect their leader by a Lease in each namespace of plans. The same
rules go into the Roles (namespaced) or the ClusterRole.
*/}}
{{- define "uwm.rbacRules" -}}
- apiGroups: ["upgrade.uwm.io"]
  resources: ["upgradeplans"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["upgrade.uwm.io"]
  resources: ["upgradeplans/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end -}}

{{/* Names of the demo estate. */}}
{{- define "uwm.demo.fullname" -}}
{{- printf "%s-demo-estate" (include "uwm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "uwm.demo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "uwm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: demo-estate
{{- end -}}

{{- define "uwm.demo.labels" -}}
{{ include "uwm.commonLabels" . }}
{{ include "uwm.demo.selectorLabels" . }}
{{- end -}}

{{/* The in-cluster host name of the demo estate's Service. */}}
{{- define "uwm.demo.host" -}}
{{- printf "%s.%s.svc" (include "uwm.demo.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The demo estate ConfigMap's data: the fleet YAML and the databases' init script. */}}
{{- define "uwm.demo.config" -}}
# The fleet `uwm-sim fleet` runs (format: simulators/uwm_sim/config.py). ${VAR}s come from the Secret.
fleet.yaml: |
  releases: ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1"]
  tokenEnv: UWM_SIM_TOKEN
  host: 0.0.0.0
  advertiseHost: {{ include "uwm.demo.host" . }}
  stateDatabase:
    odbc: "DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;DATABASE=uwm_state;UID=uwm;PWD=${PGPASSWORD};BoolsAsChar=0"
  timing:
    settleSeconds: {{ .Values.demoEstate.timing.settleSeconds }}
    installSeconds: {{ .Values.demoEstate.timing.installSeconds }}
  databases:
    - name: mgmt-db
      kind: Management
      schemaVersion: "2021.1"
      odbc: "DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;DATABASE=uwm_mgmt;UID=uwm;PWD=${PGPASSWORD};BoolsAsChar=0"
    - name: pers-db
      kind: Personalization
      schemaVersion: "2021.1"
      odbc: "DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;DATABASE=uwm_pers;UID=uwm;PWD=${PGPASSWORD};BoolsAsChar=0"
  servers:
    - {name: ms-1, kind: Management, database: mgmt-db, port: 7751, loadBalanced: true}
    - {name: ms-2, kind: Management, database: mgmt-db, port: 7752, loadBalanced: true}
    - {name: ps-1, kind: Personalization, database: pers-db, port: 7771, replicationRole: Master}
    - {name: ps-2, kind: Personalization, database: pers-db, port: 7772, replicationRole: Subscriber}
  loadBalancers:
    - {name: ms-pool, port: 7750, servers: [ms-1, ms-2]}
# Run once by the PostgreSQL image when its data directory is new.
init-databases.sql: |
  CREATE DATABASE uwm_state OWNER uwm;
  CREATE DATABASE uwm_mgmt OWNER uwm;
  CREATE DATABASE uwm_pers OWNER uwm;
{{- end -}}
