"""Every bad setting gets one line that names it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from p2p_market.markets.devnet import default_market
from p2p_market.node.config import DEFAULT_LISTEN, ConfigError, load_config, parse_config
from p2p_market.node.runtime import gossip_config

BASE = {"node": {"key_file": "k.pem", "data_dir": "d"}}
RELAY = "/ip4/1.2.3.4/tcp/4701/p2p/12D3KooWSAxxGumW7UYppNhZE2CBmJR4jkszzqcyTsz5wAz8T2iF"


def test_minimal_config_uses_the_devnet_market(tmp_path: Path) -> None:
    cfg = parse_config(BASE, tmp_path)
    assert cfg.markets == (default_market(),)
    assert cfg.key_file == tmp_path / "k.pem" and cfg.api_port == 0 and cfg.metrics_port == -1


def test_a_market_descriptor_in_full(tmp_path: Path) -> None:
    market = {
        "name": "m",
        "proof_system": "external",
        "verifier": "v {proof}",
        "difficulty": 0,
        "created_at": 1,
    }
    cfg = parse_config({**BASE, "markets": [market]}, tmp_path)
    assert cfg.markets[0].name == "m"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "missing [node] section"),
        ({"node": {"data_dir": "d"}}, "missing node.key_file"),
        ({"node": {**BASE["node"], "colour": 1}}, "unknown setting node.colour"),
        ({"node": {**BASE["node"], "api_port": "80"}}, "node.api_port must be int, not str"),
        (
            {"node": {**BASE["node"], "api_port": 70000}},
            "node.api_port must be an integer between 0 and 65535, not 70000",
        ),
        ({"node": {**BASE["node"], "listen": ["tcp:1"]}}, "node.listen: not a multiaddr: 'tcp:1'"),
        ({"node": {**BASE["node"], "frames_per_second": 0}}, "node.frames_per_second must be"),
        ({"node": {**BASE["node"], "sync_every_s": 0.1}}, "node.sync_every_s must be"),
        ({"node": {**BASE["node"], "sync_every_s": "often"}}, "node.sync_every_s must be float"),
        ({**BASE, "markets": []}, "markets must be a non-empty list"),
        ({**BASE, "markets": [{"preset": "mainnet"}]}, 'markets[0].preset must be "devnet"'),
        ({**BASE, "markets": [{"name": "x"}]}, "markets[0]:"),
        ({**BASE, "extra": {}}, "unknown section [extra]"),
        ({"node": {**BASE["node"], "mdns": True}}, "node.mdns was removed"),
        ({"node": {**BASE["node"], "relay_service": 1}}, "node.relay_service must be bool"),
        ({"node": {**BASE["node"], "batching": "off"}}, "node.batching must be bool, not str"),
        (
            {"node": {**BASE["node"], "reachability": "nat"}},
            'node.reachability must be "public" or "private", not \'nat\'',
        ),
        (
            {"node": {**BASE["node"], "reachability": "private"}},
            'node.reachability = "private" needs node.relays',
        ),
        (
            {"node": {**BASE["node"], "relays": [RELAY]}},
            'node.relays is only used with node.reachability = "private"',
        ),
        (
            {"node": {**BASE["node"], "reachability": "private", "relays": ["/ip4/1.2.3.4/tcp/1"]}},
            "node.relays: '/ip4/1.2.3.4/tcp/1' is not a relay's TCP multiaddr with /p2p/",
        ),
        (
            {
                "node": {
                    **BASE["node"],
                    "reachability": "private",
                    "relays": [RELAY],
                    "relay_service": True,
                }
            },
            "node.relay_service needs a node others can dial",
        ),
        ({"node": {**BASE["node"], "announce": ["here"]}}, "node.announce: not a multiaddr"),
        ({"node": {**BASE["node"], "api_listen": "lan"}}, "node.api_listen must be an IP"),
        (
            {"node": {**BASE["node"], "api_listen": "0.0.0.0"}},
            "node.api_listen = '0.0.0.0' is not loopback: set node.api_token_everywhere",
        ),
        (
            {"node": {**BASE["node"], "metrics_port": 0, "metrics_listen": "10.0.0.5"}},
            "node.metrics_listen = '10.0.0.5' is not loopback",
        ),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file is a directory"):
        load_config(tmp_path)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[node]\nkey_file = "cl\xe9.pem"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin)


# -- role sections checked against their markets ----------------------------------------


def _plan(tmp_path: Path, data: dict) -> object:  # type: ignore[type-arg]
    from p2p_market.roles.wiring import plan_from_config

    return plan_from_config(parse_config({**BASE, **data}, tmp_path), tmp_path)[1]


def _short_market(tmp_path: Path, **fields: Any) -> str:
    """A descriptor file of the devnet market with these fields changed."""
    from p2p_market.markets.descriptor import write_descriptor

    short = dataclasses.replace(default_market(), **fields)
    path = tmp_path / "short.toml"
    write_descriptor(path, short)
    return str(path)


def test_a_bid_that_outlives_the_market_is_a_config_error(tmp_path: Path) -> None:
    """Every node refuses a bid living longer than the market's max lifetime
    (expiry_too_far): the config must say so, not a prover that never gets work."""
    market = _short_market(tmp_path, max_lifetime_ms=60_000)
    prover = {"market": market, "price": 5, "proof_time": 2_000}
    plan = _plan(tmp_path, {"prover": prover})
    assert plan.prover.bid_ttl_ms == 60_000  # type: ignore[attr-defined]  # the default, capped
    with pytest.raises(ConfigError) as info:
        _plan(tmp_path, {"prover": {**prover, "bid_ttl_ms": 600_000}})
    assert str(info.value) == (
        "[prover]: bid ttl 600000 ms is above market devnet-pow's max lifetime (60000 ms):"
        " every node would refuse the bid"
    )


def test_the_requester_checks_its_commands_against_the_workload_market(tmp_path: Path) -> None:
    """A market named only by [workload] gets the same checks of the requester's
    command templates as [[markets]] (it was a traceback at start)."""
    market = _short_market(
        tmp_path, proof_system="external", verifier="verify {proof}", difficulty=0
    )
    with pytest.raises(ConfigError) as info:
        _plan(
            tmp_path,
            {
                "requester": {"verify_cmd": "verify {nothing}"},
                "workload": {"market": market, "rate": 1},
            },
        )
    assert str(info.value).startswith("[requester]: ")
    assert "\n" not in str(info.value)


def test_the_award_lag_is_checked(tmp_path: Path) -> None:
    assert _plan(tmp_path, {"requester": {}}).requester.award_lag_ms == 250  # type: ignore[attr-defined]
    plan = _plan(tmp_path, {"requester": {"award_lag_ms": 2_000}})
    assert plan.requester.award_lag_ms == 2_000  # type: ignore[attr-defined]
    for bad in (-1, 60_001):
        with pytest.raises(ConfigError) as info:
            _plan(tmp_path, {"requester": {"award_lag_ms": bad}})
        assert str(info.value) == (
            f"requester.award_lag_ms must be an integer between 0 and 60000, not {bad}"
        )
    with pytest.raises(ConfigError, match="award_lag_ms must be int"):
        _plan(tmp_path, {"requester": {"award_lag_ms": "fast"}})


def test_listen_defaults_to_the_fixed_port(tmp_path: Path) -> None:
    """Issue 13: the default port 0 changed the node's address at every restart."""
    cfg = parse_config(BASE, tmp_path)
    assert cfg.listen == (DEFAULT_LISTEN,) == ("/ip4/127.0.0.1/tcp/4701",)
    any_port = parse_config({"node": {**BASE["node"], "listen": ["/ip4/0.0.0.0/tcp/0"]}}, tmp_path)
    assert any_port.listen == ("/ip4/0.0.0.0/tcp/0",)


def test_off_loopback_servers_go_with_the_token_everywhere(tmp_path: Path) -> None:
    node = {
        **BASE["node"],
        "api_listen": "0.0.0.0",
        "metrics_listen": "::",
        "metrics_port": 0,
        "api_token_everywhere": True,
        "announce": ["/dns4/market.example/tcp/4701"],
    }
    cfg = parse_config({"node": node}, tmp_path)
    assert (cfg.api_listen, cfg.metrics_listen, cfg.api_token_everywhere) == ("0.0.0.0", "::", True)
    assert cfg.announce == ("/dns4/market.example/tcp/4701",)
    # A metrics address off loopback is no problem while the metrics are off.
    quiet = parse_config({"node": {**BASE["node"], "metrics_listen": "0.0.0.0"}}, tmp_path)
    assert quiet.metrics_port == -1


def test_a_markets_entry_by_id_is_resolved_here_or_left_to_fetch(tmp_path: Path) -> None:
    """`[[markets]] id = ...`: a market whose descriptor this machine holds (beside
    the config, or fetched earlier into the data dir) is followed at once; another
    is left in `market_ids` for the CLI to fetch, and a node refuses to start with
    it unresolved."""
    from p2p_market.core.crypto import devnet_key
    from p2p_market.core.envelope import market_id
    from p2p_market.markets.descriptor import write_descriptor
    from p2p_market.node.runtime import Node

    here, fetched, elsewhere = (default_market(nonce=n) for n in (1, 2, 3))
    write_descriptor(tmp_path / "markets" / "here.toml", here)
    write_descriptor(tmp_path / "data" / "markets" / f"{market_id(fetched).hex()}.toml", fetched)
    node = {"key_file": "k.pem", "data_dir": "data"}
    entries = [{"id": market_id(m).hex()} for m in (here, fetched, elsewhere)]
    cfg = parse_config({"node": node, "markets": entries}, tmp_path)
    assert cfg.markets == (here, fetched)
    assert cfg.market_ids == (market_id(elsewhere),)
    with pytest.raises(ValueError, match="named by id and not resolved"):
        Node(cfg, devnet_key("config-test"))
    for bad, why in (
        ({"id": "xyz"}, r"markets\[0\]\.id must be a market id"),
        ({"id": 5}, r"markets\[0\]\.id must be a market id"),
        ({"id": market_id(here).hex(), "name": "x"}, r"markets\[0\]: id must be alone"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse_config({"node": node, "markets": [bad]}, tmp_path)


def test_a_private_node_listens_nowhere_and_names_its_relays(tmp_path: Path) -> None:
    node = {**BASE["node"], "listen": [], "reachability": "private", "relays": [RELAY]}
    cfg = parse_config({"node": node}, tmp_path)
    assert cfg.listen == () and cfg.reachability == "private" and cfg.relays == (RELAY,)
    assert not cfg.relay_service
    assert parse_config({"node": {**BASE["node"], "relay_service": True}}, tmp_path).relay_service


# -- every key of the schema ------------------------------------------------------------

_VALID: dict[str, dict[str, Any]] = {
    "node": dict(BASE["node"]),
    "prover": {"market": "devnet", "price": 5, "proof_time": 2_000},
    "requester": {},
    "workload": {"rate": 1},
}
"""A valid table of each section (a workload needs a requester beside it)."""


def _sections() -> list[tuple[str, str]]:
    from p2p_market.node.config_schema import SECTIONS

    return [(name, key) for name in _VALID for key in SECTIONS[name].model_fields]


def _bounded_keys() -> list[tuple[str, str]]:
    """The keys with a numeric bound in the schema (the others have none to pass)."""
    from p2p_market.markets.schema import _bounds
    from p2p_market.node.config_schema import SECTIONS

    return [(s, k) for s, k in _sections() if _bounds(SECTIONS[s].model_fields[k])]


def _check(tmp_path: Path, section: str, key: str, value: Any) -> str:
    """The one line a config with `section.key = value` gets, else ""."""
    from p2p_market.roles.wiring import plan_from_config

    data: dict[str, Any] = {"node": dict(BASE["node"]), "requester": {}}
    data[section] = {**_VALID[section], key: value}
    try:
        plan_from_config(parse_config(data, tmp_path), tmp_path)
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text and "pydantic" not in text and "errors.pydantic.dev" not in text
        return text
    return ""


@pytest.mark.parametrize(("section", "key"), _sections())
def test_every_key_refuses_a_value_of_the_wrong_type_in_one_line(
    tmp_path: Path, section: str, key: str
) -> None:
    """A TOML table is the wrong type for every key: one line naming it, from the
    schema's error mapping, never pydantic's multi-line text."""
    line = _check(tmp_path, section, key, {"x": 1})
    assert line.startswith(f"{section}.{key} must be"), line


@pytest.mark.parametrize(("section", "key"), _bounded_keys())
def test_every_bounded_key_refuses_a_value_past_its_bound(
    tmp_path: Path, section: str, key: str
) -> None:
    """Each key with a bound in the schema is refused just past it, with the bound
    and the value in the line (the bounds docs/config.md shows are these)."""
    from p2p_market.markets.schema import _bounds
    from p2p_market.node.config_schema import SECTIONS

    info = SECTIONS[section].model_fields[key]
    bounds = _bounds(info)
    integer = info.annotation is int or int in getattr(info.annotation, "__args__", ())
    step = 1 if integer else 0.001
    below = bounds["ge"] - step if "ge" in bounds else bounds["gt"]
    above = bounds["le"] + step if "le" in bounds else None
    for value in (below, above):
        if value is None:
            continue
        line = _check(tmp_path, section, key, int(value) if integer else float(value))
        assert line.startswith(f"{section}.{key} must be"), line
        assert f"not {value:g}" in line or f"not {value}" in line, line


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"created_at": None}, "d.toml: missing field 'created_at'"),
        ({"window": 5}, "d.toml: unknown field 'window' in a market descriptor"),
        ({"difficulty": 65}, "d.toml: difficulty must be an integer between 0 and 64, not 65"),
        ({"difficulty": "7"}, "d.toml: difficulty must be int, not str"),
        ({"name": ""}, "d.toml: name must be text of 1..64 characters"),
        ({"proof_system": "zk"}, 'd.toml: proof_system must be "pow", "external", "groth16"'),
        ({"skew_ms": 60_001}, "d.toml: skew_ms must be an integer between 0 and 60000"),
        ({"stage_ms": 5_000}, "d.toml: stage_ms=5000 outside [1, 3000]"),  # Market's own
    ],
)
def test_a_bad_descriptor_file_is_one_line_naming_the_field(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    """Descriptor files go through the schema too (node/config_schema.py
    MarketDescriptor); what depends on another field is Market's check."""
    import tomllib

    from p2p_market.markets.descriptor import MarketSpecError, descriptor_text, parse_descriptor

    data = tomllib.loads(descriptor_text(default_market()))
    for name, value in fields.items():
        if value is None:
            del data[name]
        else:
            data[name] = value
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())
    with pytest.raises(MarketSpecError) as info:
        parse_descriptor(text, "d.toml")
    assert str(info.value).startswith(message) and "\n" not in str(info.value), info.value
    with pytest.raises(ConfigError) as inline:  # the same fields inline in [[markets]]
        parse_config({**BASE, "markets": [data]}, tmp_path)
    assert str(inline.value).startswith("markets[0]: " + message.removeprefix("d.toml: "))


def test_batching_is_on_unless_switched_off(tmp_path: Path) -> None:
    on = gossip_config(parse_config(BASE, tmp_path))
    assert (on.frames_per_second, on.max_envelopes_per_frame) == (2.0, 64)
    off = gossip_config(parse_config({"node": {**BASE["node"], "batching": False}}, tmp_path))
    assert off.max_envelopes_per_frame == 1 and off.frames_per_second >= 1000
