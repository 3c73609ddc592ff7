{{/*
twill.image is the image of both containers: flannel.image, the tag
defaulting to the chart's appVersion. Upstream flannel's image would start
but cannot run Twill's commands, so it is refused.
*/}}
{{- define "twill.image" -}}
{{- $img := .Values.flannel.image -}}
{{- if regexMatch "(^|/)(flannel-io|flannel|flannelcni)/flannel(-cni-plugin)?$" $img.repository -}}
{{- fail (printf "flannel.image.repository %q is upstream flannel's image; Twill runs its own (ghcr.io/twill-net/twill): remove flannel.image from your values or name a copy of Twill's image" $img.repository) -}}
{{- end -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/*
twill.args is flanneld's argument list, as YAML: flannel.args (with
--kube-subnet-mgr, and --ip-masq as flannel.masquerade says), then the
chart's flags, then flannel.extraArgs.
*/}}
{{- define "twill.args" -}}
{{- $f := .Values.flannel -}}
{{- $args := $f.args | default list -}}
{{- if eq (toString $f.masquerade) "false" -}}
{{- $args = without $args "--ip-masq" "--ip-masq=true" -}}
{{- else if and (eq (toString $f.masquerade) "true") (not (has "--ip-masq" $args)) (not (has "--ip-masq=true" $args)) -}}
{{- $args = prepend $args "--ip-masq" -}}
{{- end -}}
{{- if not (has "--kube-subnet-mgr" $args) -}}
{{- $args = append $args "--kube-subnet-mgr" -}}
{{- end -}}
{{- if not $f.skipCNIConfigInstallation -}}
{{- $args = append $args "--cni-conf-src=/etc/kube-flannel/cni-conf.json" -}}
{{- $args = append $args "--cni-conf-dest=/etc/cni/net.d/10-flannel.conflist" -}}
{{- end -}}
{{- if $f.healthz.port -}}
{{- $args = append $args (printf "--healthz-port=%d" (int $f.healthz.port)) -}}
{{- end -}}
{{- if not $f.vxlanGuard -}}
{{- $args = append $args "--vxlan-guard=false" -}}
{{- end -}}
{{- concat $args ($f.extraArgs | default list) | toYaml -}}
{{- end -}}

{{/*
twill.checks fails the render on values the schema cannot judge alone.
*/}}
{{- define "twill.checks" -}}
{{- $f := .Values.flannel -}}
{{- if and (not .Values.podCidr) (not .Values.podCidrv6) -}}
{{- fail "podCidr and podCidrv6 are both empty: set podCidr (IPv4), podCidrv6 (IPv6) or both to the cluster's pod network" -}}
{{- end -}}
{{- if .Values.netpol.enabled -}}
{{- fail "netpol.enabled: Twill's chart does not run upstream flannel's kube-network-policies sidecar; set it false and install a network policy controller of your choice" -}}
{{- end -}}
{{- if $f.GBP -}}
{{- fail "flannel.GBP: Twill's vxlan backend has no Group Based Policy; remove it" -}}
{{- end -}}
{{- if $f.macPrefix -}}
{{- fail "flannel.macPrefix: it applies to Windows nodes, which Twill does not run on; remove it" -}}
{{- end -}}
{{- if and (ne $f.backend "vxlan") (or $f.vni $f.backendPort $f.directRouting) -}}
{{- fail (printf "flannel.vni, flannel.backendPort and flannel.directRouting are vxlan settings; flannel.backend is %s: remove them or use vxlan" $f.backend) -}}
{{- end -}}
{{- if and (ne $f.backend "host-gw") $f.underlayRoutes -}}
{{- fail (printf "flannel.underlayRoutes is a host-gw setting; flannel.backend is %s: remove it or use host-gw" $f.backend) -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not $f.healthz.port) -}}
{{- fail "metrics.serviceMonitor.enabled needs flannel.healthz.port, the port /metrics is served on: set it (10268) or turn the ServiceMonitor off" -}}
{{- end -}}
{{- $conf := $f.cniConf | fromJson -}}
{{- if hasKey $conf "Error" -}}
{{- fail (printf "flannel.cniConf is not JSON: %s" $conf.Error) -}}
{{- end -}}
{{- end -}}
