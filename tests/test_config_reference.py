"""docs/config.md against the parsers: every key a config file may hold is a row of
its section's table, no row names a key the parser would refuse, and the examples
parse. The accepted keys come from the parsers' own lists (the sets their
unknown-key checks use), so a key added to a parser and not to the reference, or
removed from a parser and left in it, fails here. The node config's tables are
written from its schema (node/config_schema.py, `p2p-market config reference`):
the file must be what that command writes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2p_market.cli.app import app
from p2p_market.cli.config_cmd import render_reference
from p2p_market.cli.templates import ROLES
from p2p_market.core.envelope import market_id
from p2p_market.localnet import scenario
from p2p_market.localnet.scenario_file import load_scenario, parse_scenario
from p2p_market.markets.descriptor import MARKET_FIELDS, parse_descriptor
from p2p_market.node import config as node_config
from p2p_market.node.config import ConfigError, parse_config
from p2p_market.node.config_schema import NodeSection
from p2p_market.roles import wiring, workload
from p2p_market.roles.wiring import plan_from_config

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "config.md"

NODE = "Node config"
DESCRIPTOR = "Market descriptor"
SCENARIO = "Scenario file"

MARKET_ENTRY_FORMS = frozenset({"preset", "descriptor", "id"})
"""The [[markets]] keys that are not descriptor fields: node/config.py `_market` reads
these three by name (any other key is passed to Market, which refuses what is not a
field; see test_markets_entry_forms)."""

EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    (NODE, "[node]"): frozenset(NodeSection.model_fields),
    (NODE, "[[markets]]"): MARKET_ENTRY_FORMS,
    (NODE, "[prover]"): wiring.PROVER_KEYS,
    (NODE, "[requester]"): wiring.REQUESTER_KEYS,
    (NODE, "[workload]"): workload.WORKLOAD_KEYS,
    (DESCRIPTOR, "Fields"): frozenset(MARKET_FIELDS),
    (SCENARIO, "[run]"): scenario.RUN_KEYS,
    (SCENARIO, "[market]"): scenario.MARKET_KEYS,
    (SCENARIO, "[workload]"): scenario.WORKLOAD_KEYS,
    (SCENARIO, "[[nodes]]"): frozenset(scenario.NODE_KEYS) | scenario.PROVER_KEYS,
    (SCENARIO, "[[faults]]"): scenario.FAULT_KEYS,
    (SCENARIO, "[network]"): scenario.NETWORK_KEYS,
}
"""Per (file, section): the keys the parser accepts there. A requester's [[nodes]]
keys are those of the scenario's [workload], documented there."""

_ROW = re.compile(r"^\| `([A-Za-z_]+)` \|")


def _split(text: str, marker: str) -> dict[str, str]:
    """The text under each heading that starts with `marker` ("## ", "### "), by its
    title without backticks; lines in code blocks are never headings."""
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith(marker):
            current = parts.setdefault(line[len(marker) :].strip().strip("`"), [])
            continue
        if current is not None:
            current.append(line)
    return {title: "\n".join(lines) for title, lines in parts.items()}


FILES = _split(DOC.read_text(encoding="utf-8"), "## ")
SECTIONS = {(f, s): body for f, text in FILES.items() for s, body in _split(text, "### ").items()}


def documented(file: str, section: str) -> set[str]:
    body = SECTIONS.get((file, section))
    assert body is not None, f"docs/config.md has no '### {section}' under '## {file}'"
    return {m.group(1) for line in body.splitlines() if (m := _ROW.match(line))}


@pytest.mark.parametrize(("file", "section"), sorted(EXPECTED))
def test_every_accepted_key_is_documented(file: str, section: str) -> None:
    accepted = EXPECTED[(file, section)]
    rows = documented(file, section)
    missing = sorted(accepted - rows)
    assert not missing, f"docs/config.md, {file} {section}: no row for {missing}"
    extra = sorted(rows - accepted)
    assert not extra, f"docs/config.md, {file} {section}: rows for keys not accepted: {extra}"


def _title(name: str, array: bool) -> str:
    return f"[[{name}]]" if array else f"[{name}]"


def test_every_section_is_documented() -> None:
    """Each section a parser accepts has its heading, and a row check above."""
    node = {_title(s, s == "markets") for s in node_config.SECTIONS}
    sim = {_title(s, s in ("nodes", "faults")) for s in scenario.SECTIONS}
    for file, titles in ((NODE, node), (SCENARIO, sim)):
        headings = {title for f, title in SECTIONS if f == file}
        assert headings == titles, f"docs/config.md, {file}: headings {sorted(headings)}"
        assert {title for f, title in EXPECTED if f == file} == titles


def test_markets_entry_forms(tmp_path: Path) -> None:
    """Each documented [[markets]] form works alone; any other key not a descriptor
    field is refused."""
    (tmp_path / "m.toml").write_text(_example(DESCRIPTOR))
    (tmp_path / "markets").mkdir()
    (tmp_path / "markets" / "m.toml").write_text(_example(DESCRIPTOR))
    mid = market_id(parse_descriptor(_example(DESCRIPTOR))).hex()
    node = {"key_file": "k.pem", "data_dir": "data"}
    values = {"preset": "devnet", "descriptor": "m.toml", "id": mid}
    assert set(values) == MARKET_ENTRY_FORMS
    for key, value in values.items():
        cfg = parse_config({"node": node, "markets": [{key: value}]}, tmp_path)
        assert len(cfg.markets) == 1
    with pytest.raises(ConfigError, match=r"markets\[0\]"):
        parse_config({"node": node, "markets": [{"presets": "devnet"}]}, tmp_path)


def _example(file: str) -> str:
    """The first TOML code block under `## file`."""
    found = re.search(r"^```toml\n(.*?)^```", FILES[file], re.S | re.M)
    assert found is not None, f"docs/config.md: no example under '## {file}'"
    return found.group(1)


def test_examples_parse(tmp_path: Path) -> None:
    data = tomllib.loads(_example(NODE))
    _, plan = plan_from_config(parse_config(data, tmp_path), tmp_path)
    assert plan.prover is not None
    parse_descriptor(_example(DESCRIPTOR))
    sc = parse_scenario(tomllib.loads(_example(SCENARIO)), tmp_path / "smallest.toml")
    assert [n.role for n in sc.nodes] == ["prover", "requester"]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "simulations").glob("*.toml")), ids=lambda p: p.name
)
def test_scenarios_pointed_to_load(path: Path) -> None:
    assert load_scenario(path).nodes


def _template_keys(text: str) -> dict[str, set[str]]:
    """Per section title ("[node]", "[[markets]]", ...): the keys a template sets,
    and those it shows commented out (`# key = value`) below the section header."""
    keys: dict[str, set[str]] = {}
    for name, value in tomllib.loads(text).items():
        tables = value if isinstance(value, list) else [value]
        keys[_title(name, isinstance(value, list))] = {k for t in tables for k in t}
    section = None
    for line in text.splitlines():
        if re.fullmatch(r"\[\[?\w+\]\]?", line):
            section = line
        elif section is not None and (m := re.match(r"# (\w+) = ", line)):
            keys[section].add(m.group(1))
    return keys


@pytest.mark.parametrize("role", ROLES)
def test_init_templates_keys_are_documented(tmp_path: Path, role: str) -> None:
    """Every key `p2p-market init ROLE` writes (or suggests in a comment) is a row
    of its section here, so a template never teaches a key the reference lacks."""
    runner = CliRunner()
    for needed in ("relay", role):
        out = tmp_path / f"{needed}.toml"
        done = runner.invoke(app, ["init", needed, "--out", str(out), "--force"])
        assert done.exit_code == 0, done.output
    keys = _template_keys((tmp_path / f"{role}.toml").read_text())
    assert keys
    for section, written in keys.items():
        missing = sorted(written - documented(NODE, section))
        assert not missing, f"init {role}: {section} keys not in docs/config.md: {missing}"


def test_the_node_config_tables_are_what_the_schema_writes() -> None:
    """Every node config section has a generated block, and the file is what
    `p2p-market config reference` would write: a key, bound, default or meaning
    changed in the schema and not regenerated here fails."""
    text = DOC.read_text(encoding="utf-8")
    blocks = {(NODE, _title(s, s == "markets")): s for s in node_config.SECTIONS}
    blocks |= {
        (DESCRIPTOR, "Fields"): "descriptor",
        (SCENARIO, "[run]"): "scenario.run",
        (SCENARIO, "[network]"): "scenario.network",
    }
    for (file, title), block in blocks.items():
        marker = f"<!-- generated by p2p-market config reference: {block} -->"
        assert marker in SECTIONS[(file, title)], (file, title)
    assert render_reference(text) == text, "docs/config.md is stale: p2p-market config reference"


def test_the_reference_command_rewrites_a_stale_table(tmp_path: Path) -> None:
    """The command puts back a table edited by hand, keeps the prose around it, and
    --check says the file is stale (exit 1) without writing."""
    text = DOC.read_text(encoding="utf-8")
    stale = text.replace("| `api_port` | integer 0..65535 |", "| `api_port` | integer 1..80 |")
    assert stale != text
    doc = tmp_path / "config.md"
    doc.write_text(stale, encoding="utf-8")
    runner = CliRunner()
    checked = runner.invoke(app, ["config", "reference", "--doc", str(doc), "--check"])
    assert checked.exit_code == 1 and "differs from the schema" in checked.stderr
    assert doc.read_text(encoding="utf-8") == stale
    written = runner.invoke(app, ["config", "reference", "--doc", str(doc)])
    assert written.exit_code == 0, written.output
    assert doc.read_text(encoding="utf-8") == text
    again = runner.invoke(app, ["config", "reference", "--doc", str(doc), "--check"])
    assert again.exit_code == 0 and "up to date" in again.stdout
