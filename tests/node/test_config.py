"""Every bad setting gets one line that names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_market.markets.devnet import default_market
from p2p_market.node.config import ConfigError, load_config, parse_config

BASE = {"node": {"key_file": "k.pem", "data_dir": "d"}}


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
            "node.api_port must be between 0 and 65535",
        ),
        ({"node": {**BASE["node"], "listen": ["tcp:1"]}}, "node.listen: not a multiaddr: 'tcp:1'"),
        ({"node": {**BASE["node"], "frames_per_second": 0}}, "node.frames_per_second must be"),
        ({"node": {**BASE["node"], "sync_every_s": 0.1}}, "node.sync_every_s must be"),
        ({"node": {**BASE["node"], "sync_every_s": "often"}}, "node.sync_every_s must be float"),
        ({**BASE, "markets": []}, "markets must be a non-empty list"),
        ({**BASE, "markets": [{"preset": "mainnet"}]}, 'markets[0]: the only preset is "devnet"'),
        ({**BASE, "markets": [{"name": "x"}]}, "markets[0]:"),
        ({**BASE, "extra": {}}, "unknown section [extra]"),
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
