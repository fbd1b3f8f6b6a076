{{/*
The alert rules: one Prometheus rule group, from .Values.prometheusRule. The source of truth for
every copy: templates/prometheusrule.yaml wraps it in a PrometheusRule; deploy/prometheus/
better-authz.rules.yaml (plain Prometheus) and k8s/components/prometheusrule are this, rendered
with the default values (scripts/validate_k8s.py fails when they drift, and --write-generated
rewrites them). Each alert links its section of docs/runbook.md.
*/}}
{{- define "better-authz.alertGroups" -}}
{{- $p := .Values.prometheusRule }}
{{- $a := $p.alerts }}
{{- $job := $p.job | default (include "better-authz.fullname" .) }}
{{- $sel := printf "job=\"%s\"" $job }}
{{- $w := $p.rateWindow }}
{{- $all := printf "sum by (job) (rate(better_authz_decisions_total{%s}[%s]))" $sel $w }}
{{- $unavailable := printf "sum by (job) (rate(better_authz_decisions_total{%s,reason=\"AUTH_UNAVAILABLE\"}[%s]))" $sel $w }}
{{- $authError := printf "sum by (job) (rate(better_authz_decisions_total{%s,reason=\"AUTH_ERROR\"}[%s]))" $sel $w -}}
groups:
  - name: better-authz
    rules:
      - alert: BetterAuthzBetterAuthUnavailable
        expr: |-
          {{ $unavailable }}
            / {{ $all }}
            > {{ $a.betterAuthUnavailable.ratio }}
        for: {{ $a.betterAuthUnavailable.for }}
        labels:
          severity: {{ $a.betterAuthUnavailable.severity }}
        annotations:
          summary: Better Auth cannot be asked; checks fail closed with 503
          description: {{`'{{ $value | humanizePercentage }}`}} of the checks of {{`{{ $labels.job }}`}} over the last {{ $w }} were answered 503 AUTH_UNAVAILABLE (Better Auth refused, timed out, answered 5xx or 429, or load was shed). Those requests were refused.'
          runbook_url: {{ $p.runbookUrl }}#betterauthzbetterauthunavailable
      - alert: BetterAuthzCheckLatencyHigh
        expr: |-
          histogram_quantile(0.95, sum by (job, transport, le) (rate(better_authz_check_duration_seconds_bucket{{ printf "{%s}" $sel }}[{{ $w }}])))
            > {{ $a.checkLatency.p95Seconds }}
        for: {{ $a.checkLatency.for }}
        labels:
          severity: {{ $a.checkLatency.severity }}
        annotations:
          summary: Check latency p95 is over its budget of {{ $a.checkLatency.p95Seconds }} s
          description: {{`'The p95 of {{ $labels.transport }} checks of {{ $labels.job }} is {{ $value | humanizeDuration }}`}} over the last {{ $w }}. Every proxied request waits for it.'
          runbook_url: {{ $p.runbookUrl }}#betterauthzchecklatencyhigh
      - alert: BetterAuthzLoadShedding
        expr: |-
          sum by (job) (rate(better_authz_shed_total{{ printf "{%s}" $sel }}[{{ $w }}]))
            > {{ $a.loadShedding.perSecond }}
        for: {{ $a.loadShedding.for }}
        labels:
          severity: {{ $a.loadShedding.severity }}
        annotations:
          summary: better-authz is shedding load (AUTHZ_MAX_INFLIGHT reached)
          description: {{`'{{ $labels.job }} answers {{ $value | humanize }} checks/s with 503 at once`}} (over the last {{ $w }}) because AUTHZ_MAX_INFLIGHT Better Auth calls are in flight.'
          runbook_url: {{ $p.runbookUrl }}#betterauthzloadshedding
      - alert: BetterAuthzBetterAuthErrors
        expr: |-
          (
            {{ $authError }}
              / {{ $all }}
              > {{ $a.authError.ratio }}
          )
          and
          {{ $authError }}
            > {{ $a.authError.minPerSecond }}
        for: {{ $a.authError.for }}
        labels:
          severity: {{ $a.authError.severity }}
        annotations:
          summary: Better Auth answers something that is not a session (AUTH_ERROR)
          description: {{`'{{ $value | humanizePercentage }}`}} of the checks of {{`{{ $labels.job }}`}} over the last {{ $w }} were answered 500 AUTH_ERROR, above {{ $a.authError.minPerSecond }}/s. Those requests were refused.'
          runbook_url: {{ $p.runbookUrl }}#betterauthzbetterautherrors
      - alert: BetterAuthzInstanceDown
        expr: |-
          up{{ printf "{%s}" $sel }} == 0
        for: {{ $a.instanceDown.for }}
        labels:
          severity: {{ $a.instanceDown.severity }}
        annotations:
          summary: A better-authz instance cannot be scraped
          description: {{`'Prometheus cannot scrape {{ $labels.instance }} of {{ $labels.job }}.'`}}
          runbook_url: {{ $p.runbookUrl }}#betterauthzinstancedown
      - alert: BetterAuthzNotReady
        expr: |-
          better_authz_ready{{ printf "{%s}" $sel }} == 0
        for: {{ $a.notReady.for }}
        labels:
          severity: {{ $a.notReady.severity }}
        annotations:
          summary: A better-authz instance reports not ready
          description: {{`'{{ $labels.instance }} of {{ $labels.job }} answers /readyz with 503: Better Auth''s /ok has not answered recently, or it is shutting down.'`}}
          runbook_url: {{ $p.runbookUrl }}#betterauthznotready
      - alert: BetterAuthzPolicyReloadFailed
        expr: |-
          sum by (job, instance) (increase(better_authz_policy_reloads_total{{ printf "{%s,result=\"error\"}" $sel }}[{{ $w }}]))
            > 0
        for: {{ $a.policyReloadFailed.for }}
        labels:
          severity: {{ $a.policyReloadFailed.severity }}
        annotations:
          summary: A policy reload failed; the new policy is not in force
          description: {{`'{{ $labels.instance }} of {{ $labels.job }} refused {{ $value | humanize }} policy reload(s)`}} over the last {{ $w }}.'
          runbook_url: {{ $p.runbookUrl }}#betterauthzpolicyreloadfailed
{{- end }}
