"""A real Prometheus server for the operations test (tests/e2e/test_operations.py): the `prometheus` binary
(scripts/install-deps.sh: Debian's package), on a free loopback port, scraping and evaluating every second,
with a fresh TSDB under the e2e logs directory. Standard library only."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

from launcher import Proc, free_ports, http_ready, stop_all

# PromQL words that look like metric names but are not.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "bool", "offset", "inf", "nan"}


class Prometheus:
    """`prometheus` scraping `targets` (job name -> host:port list) every second and evaluating `rule_files`
    every second. Use as a context manager; `proc` is stopped on exit."""

    def __init__(self, log_dir: Path, targets: dict[str, list[str]], rule_files: list[Path],
                 name: str = "prometheus"):
        exe = shutil.which("prometheus")
        assert exe, "prometheus not found: run scripts/install-deps.sh"
        self.port = free_ports(1)[0]
        home = log_dir / name
        shutil.rmtree(home, ignore_errors=True)
        (home / "data").mkdir(parents=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": addrs}]}
                               for job, addrs in targets.items()],
        }
        (home / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(name, [exe, f"--config.file={home / 'prometheus.yml'}",
                                f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                                "--log.level=warn"],
                         log_dir=log_dir, ready=[http_ready(name, f"{self.url}/-/ready")])

    def __enter__(self) -> "Prometheus":
        self.proc.launch(60)
        return self

    def __exit__(self, *exc) -> None:
        stop_all([self.proc])

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:  # a bad query is a 400 with a JSON error body
            return json.loads(err.read())

    def query(self, expr: str) -> dict:
        """The whole /api/v1/query answer (status, data, error, warnings)."""
        return self.api("query", query=expr)

    def alerts(self, name: str, state: str | None = None) -> list[dict]:
        """Active alerts called `name` (pending or firing; `state` narrows) from /api/v1/alerts."""
        found = self.api("alerts")["data"]["alerts"]
        return [a for a in found if a["labels"].get("alertname") == name and state in (None, a["state"])]

    def wait(self, what: str, check, timeout: float) -> float:
        """Poll `check` every 0.25 s until it is true; the seconds it took. AssertionError on timeout."""
        t0 = time.monotonic()
        while not check():
            assert time.monotonic() - t0 < timeout, f"timed out after {timeout:.0f}s waiting for {what}"
            time.sleep(0.25)
        return time.monotonic() - t0


def exported_names(metrics_text: str) -> set[str]:
    """Every series name a Prometheus text exposition can produce: `# TYPE` names, and for histograms and
    summaries their _bucket, _sum and _count series."""
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", metrics_text, re.M):
        name, kind = m.groups()
        names.add(name)
        if kind in ("histogram", "summary"):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside strings, label matchers, ranges and
    grouping clauses that are neither function calls nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    idents = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text)
    return {i for i in idents if i.lower() not in PROMQL_KEYWORDS}
