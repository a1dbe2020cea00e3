"""A bought proof written as files that tools outside the project read: so that a
requester need not trust this project's verifier to believe what it paid for.

groth16 / plonk: snarkjs's own file formats, ``proof.json`` (the proof object) and
``public.json`` (the public signals), which ``snarkjs groth16 verify VKEY
public.json proof.json`` (or ``plonk verify``) takes as they are; and, when it is
found locally, the market's pinned verification key as ``verification_key.json``
(its SHA-256 is the ``vkey=`` of the market's verifier field, so anyone can check
that it is the market's). Other proof systems (pow, external): ``proof.bin``, the
proof's bytes as delivered.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from p2p_market.core.messages import Market
from p2p_market.proving import snark

PROOF_JSON: Final = "proof.json"
PUBLIC_JSON: Final = "public.json"
VKEY_JSON: Final = "verification_key.json"
RAW_PROOF: Final = "proof.bin"


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a file a verifier reads is never half written."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_proof_files(
    market: Market, proof: bytes, out_dir: Path, dirs: Sequence[Path] | None = None
) -> list[Path]:
    """Write `proof` (already verified) of `market` into `out_dir` (created if need
    be) in the form above; the paths written. ValueError if a snark proof is not of
    the market's form (it cannot be, once verified)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if market.proof_system not in snark.SYSTEMS:
        path = out_dir / RAW_PROOF
        _write(path, proof)
        return [path]
    body, signals = snark.parse_proof(proof)
    written = []
    for name, value in ((PROOF_JSON, body), (PUBLIC_JSON, signals)):
        path = out_dir / name
        _write(path, json.dumps(value, indent=1).encode() + b"\n")
        written.append(path)
    ref = snark.parse_verifier(market.verifier)
    try:
        vkey = snark.find_artifact(ref, "vkey", snark.artifact_dirs() if dirs is None else dirs)
        snark.check_artifact(vkey, ref.vkey)
    except snark.ArtifactError:
        return written  # the requester verified with it, so it is rarely missing
    path = out_dir / VKEY_JSON
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.copyfile(vkey, tmp)
    os.replace(tmp, path)
    written.append(path)
    return written
