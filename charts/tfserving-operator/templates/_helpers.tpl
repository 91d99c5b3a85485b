{{/* Names, labels and the RBAC rules shared by the ClusterRole and the per-namespace Roles. */}}

{{- define "tfso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name: used for every object, and for the cluster-scoped ones it keeps releases apart. */}}
{{- define "tfso.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "tfso.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "tfso.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tfso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tfso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tfso.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tfso.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: tfserving-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tfso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tfso.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tfso.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* kopf's peering object name (one neighbourhood per release). */}}
{{- define "tfso.peeringName" -}}
{{- default (include "tfso.fullname" .) .Values.ha.peeringName }}
{{- end }}

{{/*
What the operator itself does, rule by rule (see operator/src/tfserving_operator/
apply.py for every write and handlers.py for every watch). Granted cluster-wide
by a ClusterRole, or per watched namespace by a Role.
*/}}
{{- define "tfso.applicationRules" -}}
# Application: ServedModels arrive through kopf's watch stream (an initial list,
# then a watch); the operator never GETs one and never writes its spec.
- apiGroups: ["serving.tfoperator.dev"]
  resources: ["servedmodels"]
  verbs: ["list", "watch"]
# Application: conditions, served versions and replica counts are written with
# a merge patch of the status subresource, and only there.
- apiGroups: ["serving.tfoperator.dev"]
  resources: ["servedmodels/status"]
  verbs: ["patch"]
# Application: children carry an ownerReference with blockOwnerDeletion, which
# the OwnerReferencesPermissionEnforcement admission plugin (e.g. OpenShift)
# allows only to whoever may update the owner's finalizers. The operator itself
# never sets a finalizer.
- apiGroups: ["serving.tfoperator.dev"]
  resources: ["servedmodels/finalizers"]
  verbs: ["update"]
# Application: one model-config ConfigMap per config generation. Written with
# server-side apply (patch; create too, since the API server authorizes an
# apply that creates the object as a create), watched to notice drift, and
# deleted once no pod or ReplicaSet mounts that generation any more.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Application: the Services in front of the model servers; applied (create +
# patch) and watched so an edit or a deletion is put back; deleted when the
# spec stops rendering one (the REST Service with REST turned off), else
# garbage collection removes them with their ServedModel.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Application: the model server Deployments; same pattern as the Service
# (delete: a canary's Deployment goes once its canary is over).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Application: ReplicaSets are only read, to know which config generation each
# pod template revision still mounts.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch"]
# Application: the PodDisruptionBudget of a ServedModel; same pattern as the
# Services (deleted when the ServedModel scales down to one replica).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Application: the optional NetworkPolicy of a ServedModel; same pattern as the
# Services (deleted when the spec drops it).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Application: the HorizontalPodAutoscaler of spec.autoscaling; same pattern as
# the Service, plus delete: autoscaling turned off (or moved to KEDA) removes it.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Application: the KEDA ScaledObject of spec.autoscaling (provider keda). Not
# watched (KEDA's CRD is optional); applied, and deleted when no longer asked for.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["create", "patch", "delete"]
# Application: model server pods are watched (their IPs are asked GetModelStatus
# over gRPC); the operator never creates, edits or deletes a pod.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Application: the readiness gate: one condition in a pod's status, patched
# through the status subresource (what makes the pod Ready or not).
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
# Application: an Event on the ServedModel for every version transition
# (events.k8s.io/v1). create, and patch to count a repeat in the Event's
# series instead of creating another; none is read (kopf's own event posting
# is turned off).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
kopf's peering (ha.enabled): each replica lists and watches the peering objects
and writes its keep-alive into the one named after the release.
*/}}
{{- define "tfso.peeringRules" -}}
# Framework (kopf peering, ha.enabled): replicas find each other by listing and
# watching the peering objects (kopf reads the whole collection, so no
# resourceNames here).
- apiGroups: ["kopf.dev"]
  resources: ["{{ .resource }}"]
  verbs: ["list", "watch"]
# Framework (kopf peering, ha.enabled): each replica patches its keep-alive
# entry into this release's peering object, and no other.
- apiGroups: ["kopf.dev"]
  resources: ["{{ .resource }}"]
  resourceNames: ["{{ .name }}"]
  verbs: ["patch"]
{{- end }}

{{/* operator.labelSelector as TFSO_LABEL_SELECTOR wants it: k=v,k2=v2 (sorted keys). */}}
{{- define "tfso.labelSelector" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
