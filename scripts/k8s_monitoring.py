"""The `monitoring` check of scripts/validate_k8s.py: alert rules and the Grafana dashboard.

One source of truth each, and every copy checked against it:

  - Alert rules: the chart's `better-authz.alertGroups` (templates/_alerts.tpl) with its values.
    Generated from it (rendered with Helm's engine): deploy/prometheus/better-authz.rules.yaml and
    k8s/components/prometheusrule/prometheusrule.yaml (the default values) and
    tests/e2e/fixtures/prometheus-fast.rules.yaml (the e2e test's short windows, from
    tests/e2e/fixtures/prometheus-fast-values.yaml). A copy that differs from its rendering fails;
    `scripts/validate-k8s.sh --write-generated` rewrites them.
  - Dashboard: deploy/grafana/better-authz.json. The chart's dashboards/better-authz.json must be
    the same bytes (Helm reads files inside the chart only), and the rendered ConfigMap must carry it.

Then promtool (Debian's `prometheus` package; scripts/install-deps.sh installs it):
`promtool check rules` on each generated file and on the groups of every rendered PrometheusRule
(chart and Kustomize component), and `promtool test rules` on
deploy/prometheus/better-authz.rules.test.yaml (every alert: fires when it should, quiet when not).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "better-authz"
RULES = ROOT / "deploy" / "prometheus" / "better-authz.rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "better-authz.rules.test.yaml"
COMPONENT = ROOT / "k8s" / "components" / "prometheusrule" / "prometheusrule.yaml"
FAST_VALUES = ROOT / "tests" / "e2e" / "fixtures" / "prometheus-fast-values.yaml"
FAST_RULES = ROOT / "tests" / "e2e" / "fixtures" / "prometheus-fast.rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "better-authz.json"
CHART_DASHBOARD = CHART / "dashboards" / "better-authz.json"

GENERATED = "# Generated from charts/better-authz/templates/_alerts.tpl ({values}) by\n" \
            "# `scripts/validate-k8s.sh --write-generated`; edit the template, not this file.\n"

# The Kustomize component's object around the rule groups (as the ServiceMonitor component's).
COMPONENT_METADATA = {
    "name": "better-authz",
    "namespace": "better-authz",
    "labels": {
        "app.kubernetes.io/name": "better-authz",
        "app.kubernetes.io/part-of": "better-authz",
        # kube-prometheus-stack only loads rules carrying its release label by default (ruleSelector).
        "release": "kube-prometheus-stack",
    },
}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, so the files read like hand-written rules."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(header: str, doc: Any) -> str:
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


def alert_groups(values: dict[str, Any] | None) -> dict[str, Any]:
    """`{"groups": [...]}` as the chart renders them with `values` (release and job: better-authz)."""
    import helm_python as helm

    merged = {"prometheusRule": {"enabled": True}}
    for key, val in (values or {}).items():
        merged[key] = {**merged.get(key, {}), **val} if isinstance(val, dict) else val
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values=merged, name="better-authz", namespace="better-authz", is_install=True)
    docs = [d for k, v in out.items() if k.endswith("prometheusrule.yaml") for d in yaml.safe_load_all(v) if d]
    assert len(docs) == 1, f"expected one PrometheusRule, got {len(docs)}"
    return {"groups": docs[0]["spec"]["groups"]}


def expected_files() -> dict[Path, str]:
    """Each generated file and the text it must have."""
    defaults = alert_groups(None)
    fast = alert_groups(yaml.safe_load(FAST_VALUES.read_text()))
    component = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                 "metadata": COMPONENT_METADATA, "spec": defaults}
    return {
        RULES: dump(GENERATED.format(values="default values") +
                    "# Load it with `rule_files:`; the `job` label must be better-authz.\n", defaults),
        COMPONENT: dump(GENERATED.format(values="default values"), component),
        FAST_RULES: dump(GENERATED.format(values=FAST_VALUES.relative_to(ROOT)), fast),
        CHART_DASHBOARD: DASHBOARD.read_text(),
    }


def write_generated() -> int:
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        changed = not path.exists() or path.read_text() != text
        path.write_text(text)
        print(f"{'wrote' if changed else 'unchanged'} {path.relative_to(ROOT)}")
    return 0


def _promtool(r: Any, args: list[str], label: str) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        r.fail("promtool not found: run scripts/install-deps.sh (Debian package prometheus)")
        return
    p = subprocess.run([exe, *args], text=True, capture_output=True, cwd=ROOT)
    out = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        r.fail(f"promtool {args[0]} {args[1]} {label}:\n{out}")
    else:
        last = [line for line in out.splitlines() if line.strip()][-1:] or [""]
        r.info(f"promtool {args[0]} {args[1]} {label}: {last[0].strip()}")


def check_dashboard(r: Any, rendered_sets: dict[str, str]) -> None:
    text = DASHBOARD.read_text()
    dash = json.loads(text)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("datasource", {}).get("type") != "datasource":
        r.fail(f"{DASHBOARD.name}: no `datasource` variable of type datasource")
    for p in panels:
        if p.get("datasource", {}).get("uid") != "${datasource}" or not p.get("targets"):
            r.fail(f"{DASHBOARD.name}: panel {p['title']!r} must query ${{datasource}} and have targets")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        r.fail(f"{DASHBOARD.name}: panel ids repeat")
    if "better_authz_policy_reloads_total" in text:
        r.fail(f"{DASHBOARD.name}: queries better_authz_policy_reloads_total, which the service does not export yet")
    r.info(f"{DASHBOARD.relative_to(ROOT)}: {len(panels)} panels, {len(exprs)} queries")
    # The chart's ConfigMap (all-on rendering) carries the same JSON.
    found = False
    for name, manifest in rendered_sets.items():
        for doc in yaml.safe_load_all(manifest):
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and "better-authz.json" in (doc.get("data") or {}):
                found = True
                if doc["data"]["better-authz.json"].strip() != text.strip():
                    r.fail(f"{name}: the dashboard ConfigMap differs from {DASHBOARD.relative_to(ROOT)}")
                if (doc["metadata"].get("labels") or {}).get("grafana_dashboard") != "1":
                    r.fail(f"{name}: the dashboard ConfigMap lacks the sidecar label grafana_dashboard: \"1\"")
    if not found:
        r.fail("no rendering carries the dashboard ConfigMap (grafanaDashboard.enabled in helm/all-on?)")


def check_monitoring(r: Any, rendered: Any, _: Any) -> None:
    try:
        import helm_python  # noqa: F401
    except ImportError as e:
        r.fail(f"helm-python-sdk not importable: {e}")
        return
    for path, text in expected_files().items():
        rel = path.relative_to(ROOT)
        if not path.exists():
            r.fail(f"{rel} is missing: run scripts/validate-k8s.sh --write-generated")
        elif path == CHART_DASHBOARD and path.read_text() != text:
            r.fail(f"{rel} differs from {DASHBOARD.relative_to(ROOT)}: run scripts/validate-k8s.sh --write-generated")
        elif path != CHART_DASHBOARD and list(yaml.safe_load_all(path.read_text())) != list(yaml.safe_load_all(text)):
            r.fail(f"{rel} drifted from the chart's rules: run scripts/validate-k8s.sh --write-generated")
        else:
            r.info(f"{rel}: matches its source")
    check_dashboard(r, rendered.sets)

    for path in (RULES, FAST_RULES):
        _promtool(r, ["check", "rules", str(path)], str(path.relative_to(ROOT)))
    with tempfile.TemporaryDirectory(prefix="prometheusrule-") as tmp:
        n = 0
        for name, manifest in rendered.sets.items():
            for doc in yaml.safe_load_all(manifest):
                if isinstance(doc, dict) and doc.get("kind") == "PrometheusRule":
                    n += 1
                    path = Path(tmp) / f"{n}.yaml"
                    path.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
                    _promtool(r, ["check", "rules", str(path)], f"(groups of {name} PrometheusRule)")
        if not any(k.startswith("helm/") for k in rendered.sets) or n < 2:
            r.fail(f"expected a PrometheusRule from the chart and from k8s/components/prometheusrule, found {n}")
    _promtool(r, ["test", "rules", str(RULES_TEST)], str(RULES_TEST.relative_to(ROOT)))
