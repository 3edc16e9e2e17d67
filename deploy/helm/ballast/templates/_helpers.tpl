{{/* Names and labels. */}}
{{- define "ballast.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ballast.labels" -}}
app.kubernetes.io/name: ballast
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "ballast.selector" -}}
app.kubernetes.io/name: ballast
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ballast.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
A service's config file: the values' config, plus what the chart owns (listen addresses,
shutdown grace below the pod's termination grace, TLS, auth, Kafka security).
(dict "root" $ "svc" .Values.gateway "grpc" 50051 "admin" 9464 "kafka" true)
*/}}
{{- define "ballast.config" -}}
{{- $root := .root -}}
{{- $owned := dict "listen" (printf "0.0.0.0:%v" .grpc) "admin_listen" (printf "0.0.0.0:%v" .admin) "shutdown_grace" (printf "%vs" (sub .svc.terminationGracePeriodSeconds 10)) -}}
{{- if $root.Values.tls.enabled -}}
{{- $tls := dict "cert_file" "/etc/ballast/tls/tls.crt" "key_file" "/etc/ballast/tls/tls.key" -}}
{{- if $root.Values.tls.clientAuth -}}
{{- $_ := set $tls "client_ca_file" "/etc/ballast/tls/ca.crt" -}}
{{- $_ := set $tls "client_auth" $root.Values.tls.clientAuth -}}
{{- end -}}
{{- $_ := set $owned "tls" $tls -}}
{{- end -}}
{{- if $root.Values.auth.enabled -}}
{{- $tokens := list -}}
{{- range $root.Values.auth.tokens -}}
{{- $tokens = append $tokens (dict "principal" .principal "sha256_file" (printf "/etc/ballast/auth/%s.sha256" .principal)) -}}
{{- end -}}
{{- $_ := set $owned "auth" (dict "policy_file" "/etc/ballast/auth/policy.yaml" "tokens" $tokens) -}}
{{- end -}}
{{- if .kafka -}}
{{- $k := dict "bootstrap_servers" $root.Values.kafka.bootstrapServers "security_protocol" $root.Values.kafka.securityProtocol -}}
{{- with $root.Values.kafka.ssl }}{{ $_ := set $k "ssl" . }}{{ end -}}
{{- with $root.Values.kafka.sasl }}{{ $_ := set $k "sasl" . }}{{ end -}}
{{- $_ := set $owned "kafka" $k -}}
{{- end -}}
{{- if .topologyClient -}}
{{- $scheme := ternary "https" "http" $root.Values.tls.enabled -}}
{{- $t := dict "endpoint" (printf "%s://%s-topology:50054" $scheme (include "ballast.fullname" $root)) -}}
{{- if $root.Values.tls.enabled -}}
{{- $c := dict "ca_file" "/etc/ballast/tls/ca.crt" -}}
{{- if $root.Values.tls.clientAuth -}}
{{- $_ := set $c "cert_file" "/etc/ballast/tls/tls.crt" -}}
{{- $_ := set $c "key_file" "/etc/ballast/tls/tls.key" -}}
{{- end -}}
{{- $_ := set $t "client" $c -}}
{{- end -}}
{{- $_ := set $owned "topology" $t -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite (deepCopy .svc.config) $owned) -}}
{{- end -}}

{{/*
The pod spec shared by every workload.
(dict "root" $ "svc" .Values.gateway "component" "gateway" "binary" "ballast-gateway"
      "grpc" 50051 "admin" 9464 "kafka" true "zone" "" "rack" "")
*/}}
{{- define "ballast.podSpec" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
{{- if .zone }}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: topology.kubernetes.io/zone
              operator: In
              values: [{{ .zone | quote }}]
{{- end }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "ballast.selector" (dict "root" $root "component" .component) | nindent 8 }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "ballast.selector" (dict "root" $root "component" .component) | nindent 8 }}
containers:
  - name: {{ .component }}
    image: {{ include "ballast.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: [{{ .binary | quote }}, "--config", "/etc/ballast/config/config.yaml"]
    {{- if or .rack $svc.env }}
    env:
      {{- if .rack }}
      - name: BALLAST_RACK
        value: {{ .rack | quote }}
      {{- end }}
      {{- with $svc.env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- end }}
    ports:
      - name: grpc
        containerPort: {{ .grpc }}
        protocol: TCP
      - name: metrics
        containerPort: {{ .admin }}
        protocol: TCP
    startupProbe:
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 2
      failureThreshold: 30
    livenessProbe:
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 10
      failureThreshold: 3
    readinessProbe:
      {{- if $root.Values.tls.enabled }}
      httpGet:
        path: /readyz
        port: metrics
      {{- else }}
      grpc:
        port: {{ .grpc }}
      {{- end }}
      periodSeconds: 5
      failureThreshold: 2
    resources:
      {{- toYaml $svc.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/ballast/config
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if $root.Values.tls.enabled }}
      - name: tls
        mountPath: /etc/ballast/tls
        readOnly: true
      {{- end }}
      {{- if $root.Values.auth.enabled }}
      - name: auth
        mountPath: /etc/ballast/auth
        readOnly: true
      {{- end }}
      {{- if and .kafka $root.Values.kafka.secretName }}
      - name: kafka
        mountPath: /etc/ballast/kafka
        readOnly: true
      {{- end }}
      {{- range $svc.secretMounts }}
      - name: {{ .name }}
        mountPath: {{ .mountPath }}
        readOnly: true
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "ballast.fullname" $root }}-{{ .component }}
  - name: tmp
    emptyDir: {}
  {{- if $root.Values.tls.enabled }}
  - name: tls
    secret:
      secretName: {{ required "tls.secretName is required with tls.enabled" $root.Values.tls.secretName }}
  {{- end }}
  {{- if $root.Values.auth.enabled }}
  - name: auth
    secret:
      secretName: {{ required "auth.secretName is required with auth.enabled" $root.Values.auth.secretName }}
  {{- end }}
  {{- if and .kafka $root.Values.kafka.secretName }}
  - name: kafka
    secret:
      secretName: {{ $root.Values.kafka.secretName }}
  {{- end }}
  {{- range $svc.secretMounts }}
  - name: {{ .name }}
    secret:
      secretName: {{ .secretName }}
  {{- end }}
{{- end -}}

{{/* A PodDisruptionBudget: (dict "root" $ "svc" .Values.gateway "component" "gateway" "name" "x") */}}
{{- define "ballast.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "ballast.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ .svc.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "ballast.selector" (dict "root" .root "component" .component) | nindent 6 }}
      {{- with .zone }}
      topology.kubernetes.io/zone: {{ . | quote }}
      {{- end }}
{{- end -}}

{{/* A ClusterIP Service with grpc and metrics ports: (dict "root" $ "component" "dedup" "grpc" 50053 "admin" 9466) */}}
{{- define "ballast.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ballast.fullname" .root }}-{{ .component }}
  labels:
    {{- include "ballast.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  type: ClusterIP
  selector:
    {{- include "ballast.selector" (dict "root" .root "component" .component) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ .admin }}
      targetPort: metrics
      protocol: TCP
{{- end -}}
