"""The API token file: made once with mode 0600, then read, never replaced."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from p2p_market.node.api_token import (
    TOKEN_ENV,
    TokenError,
    ensure_token,
    read_token,
    token_from_env,
    token_path,
)

GOOD = "0123456789abcdef" * 4


def test_the_first_start_writes_a_random_token_only_its_owner_may_read(tmp_path: Path) -> None:
    old = os.umask(0)  # a umask that would leave a new file open to everyone
    try:
        token = ensure_token(tmp_path)
    finally:
        os.umask(old)
    path = token_path(tmp_path)
    assert path == tmp_path / "api.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n"
    assert len(token) == 64 and int(token, 16) >= 0
    assert ensure_token(tmp_path / "other") != token  # random, not derived from anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.token", "other"]  # no leftovers


def test_a_token_file_is_read_and_never_overwritten(tmp_path: Path) -> None:
    first = ensure_token(tmp_path)
    inode = token_path(tmp_path).stat().st_ino
    assert ensure_token(tmp_path) == first
    assert token_path(tmp_path).stat().st_ino == inode
    # A token the operator wrote: kept as it is.
    mine = tmp_path / "mine"
    mine.mkdir()
    token_path(mine).write_text(f"  {GOOD}\n")
    token_path(mine).chmod(0o600)
    assert ensure_token(mine) == GOOD
    assert token_path(mine).read_text() == f"  {GOOD}\n"


def test_a_bad_token_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = token_path(tmp_path)
    path.write_text("hunter2\n")
    path.chmod(0o600)
    with pytest.raises(TokenError, match=r"does not hold an API token \(64 hex characters\)"):
        ensure_token(tmp_path)
    assert path.read_text() == "hunter2\n"
    path.write_text(GOOD)
    path.chmod(0o644)
    with pytest.raises(TokenError, match=r"open to others \(mode 0644\): chmod 600"):
        ensure_token(tmp_path)
    assert path.read_text() == GOOD
    path.unlink()
    path.mkdir()
    with pytest.raises(TokenError, match="not a regular file"):
        ensure_token(tmp_path)


def test_nodes_started_at_once_on_one_data_dir_agree_on_one_token(tmp_path: Path) -> None:
    for attempt in range(5):
        where = tmp_path / str(attempt)
        where.mkdir()
        with ThreadPoolExecutor(8) as pool:
            tokens = set(pool.map(ensure_token, [where] * 16))
        assert tokens == {read_token(token_path(where))}
        assert [p.name for p in where.iterdir()] == ["api.token"]


def test_clients_read_the_file_or_the_environment(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match=r"API token file not found: .*nope"):
        read_token(tmp_path / "nope")
    (tmp_path / "short").write_text("abcd\n")
    with pytest.raises(TokenError, match="does not hold an API token"):
        read_token(tmp_path / "short")
    (tmp_path / "good").write_text(GOOD + "\n")
    assert read_token(tmp_path / "good") == GOOD
    assert token_from_env({}) is None
    assert token_from_env({TOKEN_ENV: " "}) is None
    assert token_from_env({TOKEN_ENV: f"{GOOD}\n"}) == GOOD
    with pytest.raises(TokenError, match=f"{TOKEN_ENV} does not hold an API token"):
        token_from_env({TOKEN_ENV: "secret"})
