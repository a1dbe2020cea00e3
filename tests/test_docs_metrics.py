"""docs/metrics.md and docs/grafana-dashboard.json against a running node's
`/metrics`: a prover node in a real market (py-libp2p hosts on 127.0.0.1, SQLite
logs, pow proofs) that has proved an ask and been paid, scraped over HTTP. Every
metric it exports has the `p2p_market_` prefix and a row of the docs' table (with its
type and labels), and the dashboard's queries name only metrics it exports, with
labels those metrics carry, and graph every one of them."""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from p2p_market.core.lifecycle import AskState
from p2p_market.node.metrics import PREFIX
from tests.roles.harness import MID, market, wait_state

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
TIMEOUT = 30

SCRAPE_LABELS = frozenset({"instance", "job"})
"""Labels Prometheus adds to every series it scrapes (the target's): a query may use
them although the node does not export them."""
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan"}
)
"""PromQL words that are neither metrics nor functions (functions and aggregations
are the names followed by a parenthesis)."""
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


@dataclass
class Exported:
    """What a node's /metrics holds: each family's type and labels, each sample name."""

    types: dict[str, str] = field(default_factory=dict)
    labels: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per sample name, the labels its samples carry (`le` included)."""
    empty: list[str] = field(default_factory=list)
    """Families without a sample: their labels cannot be told from the exposition."""

    def family_labels(self, family: str) -> frozenset[str]:
        names = [n for n in self.labels if n == family or n.startswith(family + "_")]
        return frozenset().union(*(self.labels[n] for n in names)) - {"le"}


def exported(text: str) -> Exported:
    out = Exported()
    for family in text_string_to_metric_families(text):
        out.types[family.name] = family.type
        if not family.samples:
            out.empty.append(family.name)
        for sample in family.samples:
            known = out.labels.get(sample.name, frozenset())
            out.labels[sample.name] = known | frozenset(sample.labels)
    # The text format gives a counter's or histogram's `_created` series a family of
    # its own: it is a part of that metric, not a metric.
    for name in [n for n in out.types if n.endswith("_created") and n[:-8] in out.types]:
        del out.types[name]
    return out


# -- docs/metrics.md ---------------------------------------------------------------------


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """The table's rows: name -> (type, labels)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith(f"`{PREFIX}"):
            continue
        name = cells[0].strip("`")
        assert name not in rows, f"{name}: two rows"
        labels = frozenset(re.findall(r"`(\w+)`", cells[2]))
        rows[name] = (cells[1], labels)
    return rows


def doc_name(family: str, kind: str) -> str:
    """The name a reader queries: a counter's with `_total`."""
    return family + "_total" if kind == "counter" else family


def check_the_table(node: Exported) -> None:
    rows = documented()
    expected = {
        doc_name(name, kind): (kind, node.family_labels(name)) for name, kind in node.types.items()
    }
    assert sorted(rows) == sorted(expected), "docs/metrics.md's table vs the node's /metrics"
    for name, (kind, labels) in expected.items():
        assert rows[name] == (kind, labels), f"{name}: docs say {rows[name]}, the node {kind}"


# -- docs/grafana-dashboard.json -----------------------------------------------------------


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets (rows' panels too) and the
    template variables' queries."""
    found: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend(t["expr"] for t in panel.get("targets", ()))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
        elif variable["type"] == "query":
            found.append(query)
    return found


@dataclass(frozen=True)
class Parsed:
    metrics: frozenset[str]
    matched: tuple[tuple[str, frozenset[str]], ...]
    """(metric, the labels its matchers name) for each selector with matchers."""
    grouped: frozenset[str]
    """Labels named by by / without / on / ignoring / group_left / group_right, or by
    Grafana's label_values()."""


def parse_promql(expr: str) -> Parsed:
    """The metric names and labels a PromQL expression (or Grafana's
    `label_values(metric, label)`) uses, read without a PromQL parser: anything
    this does not know as a keyword or function counts as a metric name, so an
    expression it misreads fails the check rather than passing it."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana's variables
    grouped: set[str] = set()
    values = re.fullmatch(rf"\s*label_values\(\s*(?:({IDENT})\s*,\s*)?(\w+)\s*\)\s*", text)
    if values is not None:
        metric, label = values.groups()
        grouped.add(label)
        text = metric or ""
    matched = []
    for name, body in re.findall(rf"({IDENT})?\s*\{{([^}}]*)\}}", text):
        labels = frozenset(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))
        matched.append((name, labels))
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text
    ):
        grouped.update(re.findall(r"\w+", clause))
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    names = set()
    for match in re.finditer(rf"(?<![\w.]){IDENT}", text):
        word = match.group(0)
        called = text[match.end() :].lstrip().startswith("(")
        if not called and word not in PROMQL_KEYWORDS:
            names.add(word)
    assert all(name in names for name, _ in matched if name), expr
    return Parsed(frozenset(names), tuple((n, ls) for n, ls in matched if n), frozenset(grouped))


def test_the_promql_reader_finds_names_and_labels() -> None:
    """The reader the dashboard check relies on, on the forms the dashboard uses."""
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{market=~"$market",'
        ' instance=~"$instance"}[$__rate_interval]))) / on (job) b_total - 2 * c'
    )
    parsed = parse_promql(expr)
    assert parsed.metrics == {"a_seconds_bucket", "b_total", "c"}
    assert parsed.matched == (("a_seconds_bucket", frozenset({"market", "instance"})),)
    assert parsed.grouped == {"le", "job"}
    values = parse_promql("label_values(p2p_market_peers, instance)")
    assert values.metrics == {"p2p_market_peers"} and values.grouped == {"instance"}
    assert parse_promql("label_values(instance)").metrics == frozenset()
    # a word it does not know is taken for a metric: the check fails, it does not pass
    assert parse_promql("sum(x) unles y").metrics == {"x", "unles", "y"}


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    """What Grafana's import needs: panels with unique ids inside the 24-column grid,
    targets with a refId and an expression, the data source chosen at import (the
    `datasource` variable), no data source of the author's pinned."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def check_the_dashboard(node: Exported) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = queries(dashboard)
    assert exprs, "no queries"
    used: set[str] = set()
    for expr in exprs:
        parsed = parse_promql(expr)
        assert parsed.metrics or "label_values" in expr, f"no metric in {expr!r}"
        unknown = parsed.metrics - set(node.labels)
        assert not unknown, f"{expr!r}: the node exports no {sorted(unknown)}"
        for name, labels in parsed.matched:
            extra = labels - node.labels[name] - SCRAPE_LABELS
            assert not extra, f"{expr!r}: {name} has no label {sorted(extra)}"
        carried = frozenset().union(*(node.labels[n] for n in parsed.metrics))
        extra = parsed.grouped - carried - SCRAPE_LABELS
        assert not extra, f"{expr!r}: no metric of it has the label {sorted(extra)}"
        used |= parsed.metrics
    graphed = {
        family
        for family in node.types
        if any(name == family or name.startswith(family + "_") for name in used)
    }
    assert graphed == set(node.types), f"not on the dashboard: {set(node.types) - graphed}"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        body: bytes = response.read()
        return body.decode()


async def test_docs_and_dashboard_match_what_a_running_node_exports(tmp_path: Path) -> None:
    async with market(tmp_path, {"p": (7, 10_000)}, metrics=True) as m:
        prover = m.provers["p"]
        fields = {"market": MID.hex(), "max_price": 20, "max_proof_time": 30_000}
        ask = await m.requester.request(fields, b"inputs")
        with trio.fail_after(TIMEOUT):
            await m.requester.wait(ask)
        await wait_state(m, ask, AskState.PROVEN)
        with trio.fail_after(TIMEOUT):  # paid in the prover's own view
            while prover.stats.earned != 7:
                await trio.sleep(0.05)
        url = f"http://127.0.0.1:{prover.node.metrics_port}/metrics"
        text = await trio.to_thread.run_sync(scrape, url)
    node = exported(text)
    assert node.types, "nothing exported"
    # every family has a sample here, so that its labels and names are known
    assert node.empty == [], node.empty
    assert [n for n in node.types if not n.startswith(PREFIX)] == []
    assert node.labels["p2p_market_prover_earned_total"] == {"market"}
    check_the_table(node)
    check_the_dashboard(node)
