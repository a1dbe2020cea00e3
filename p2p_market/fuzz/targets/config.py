"""The node config loader (node/config.py `load_config`, through node/tomlfile.py):
the bytes are the content of a config file on disk.

Contract: a NodeConfig, or ConfigError, the one-line error `p2p-market node run`
prints before exiting with status 2.

The file sits in a directory that also holds a valid market descriptor, so a
`descriptor = "market.toml"` entry loads a real one."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from pathlib import Path

from p2p_market.core.crypto import devnet_key
from p2p_market.fuzz.target import Target
from p2p_market.markets.descriptor import descriptor_text
from p2p_market.markets.devnet import default_market
from p2p_market.net.host import peer_id_of
from p2p_market.node.config import ConfigError, load_config

_DIR = Path(tempfile.mkdtemp(prefix="p2p-market-fuzz-config-"))
atexit.register(shutil.rmtree, _DIR, True)
(_DIR / "market.toml").write_text(descriptor_text(default_market(name="fuzz-pow", difficulty=8)))
_FILE = _DIR / "node.toml"


def check(data: bytes) -> None:
    _FILE.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_config(_FILE)


_PEER = peer_id_of(devnet_key("relay-1").public_key).to_base58()

VALID = f"""\
[node]
key_file = "keys/node.pem"
passphrase_file = "keys/pass.txt"
data_dir = "data/node"
listen = ["/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/4001"]
bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/{_PEER}"]
api_port = 8080
metrics_port = -1
announce = ["/ip4/203.0.113.7/tcp/4001", "/dns4/node.example/tcp/4001"]
api_listen = "127.0.0.1"
metrics_listen = "::1"
api_token_everywhere = false
frames_per_second = 2.5
sync_every_s = 30

[[markets]]
preset = "devnet"

[[markets]]
descriptor = "market.toml"

[[markets]]
name = "inline"
proof_system = "pow"
verifier = "sha256-leading-zero-bits"
difficulty = 4
created_at = 1767225600000
commit_window_ms = 1000

[prover]
market = "devnet"
price = 5
proof_time = 1000

[requester]
"""


def seeds() -> list[bytes]:
    return [
        VALID.encode(),
        b'[node]\nkey_file = "k.pem"\ndata_dir = "d"\n',
        b'node.key_file = "k.pem"\nnode.data_dir = "d"\nnode.api_port = 1\n',  # dotted keys
        b'[node]\nkey_file = "k.pem"\ndata_dir = "d"\nlisten = []\n'
        b'[[markets]]\npreset = "devnet"\n',
        b'[node]\nkey_file = "k.pem"\ndata_dir = "d"\n[[markets]]\nid = "' + b"ab" * 32 + b'"\n',
    ]


TARGET = Target(
    name="config",
    about="node: the node config file loader (TOML, every [node] and [[markets]] key)",
    check=check,
    seeds=seeds,
    mutation="text",
)
