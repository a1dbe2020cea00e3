"""External commands as proof back-ends, with real processes: small Python scripts
written to tmp_path and run by `sys.executable`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import stat
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from p2p_market.core.messages import Market
from p2p_market.proving import ProvingError
from p2p_market.proving.external import ExternalBackend

MARKET = Market(
    name="test-external", proof_system="external", verifier="", difficulty=0, created_at=1
)

PROVE = """
    import hashlib, json, os, sys
    inputs, proof, workdir, record = sys.argv[1:5]
    data = open(inputs, "rb").read()
    with open(record, "w") as f:
        json.dump({"workdir": workdir, "mode": os.stat(workdir).st_mode, "cwd": os.getcwd()}, f)
    with open(proof, "w") as f:
        f.write(hashlib.sha256(data).hexdigest())
"""
VERIFY = """
    import hashlib, sys
    inputs, proof = sys.argv[1:3]
    want = hashlib.sha256(open(inputs, "rb").read()).hexdigest()
    sys.exit(0 if open(proof).read() == want else 1)
"""
CHECK = """
    import sys
    sys.exit(1 if open(sys.argv[1], "rb").read().startswith(b"bad") else 0)
"""
FAIL = """
    import sys
    for i in range(1, 8):
        print(f"error line {i}", file=sys.stderr)
    sys.exit(3)
"""
SLEEP = """
    import json, os, subprocess, sys, time
    record, workdir = sys.argv[1:3]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(record + ".tmp", "w") as f:
        json.dump({"parent": os.getpid(), "child": child.pid, "workdir": workdir}, f)
    os.rename(record + ".tmp", record)
    print("working hard", file=sys.stderr, flush=True)
    time.sleep(60)
"""
STRAGGLER = """
    import json, os, subprocess, sys
    record, proof = sys.argv[1:3]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(record, "w") as f:
        json.dump({"child": child.pid}, f)
    open(proof, "wb").write(b"done")
"""
NO_OUTPUT = """
    import sys
    print("finished without writing a proof", file=sys.stderr)
"""
EMPTY_OUTPUT = """
    import sys
    open(sys.argv[1], "wb").close()
"""
FIFO_OUTPUT = """
    import os, sys
    os.mkfifo(sys.argv[1])
"""
EXIT = """
    import sys
    print("verifier is confused", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
"""


def cmd(tmp_path: Path, source: str, *args: str) -> str:
    """A command template running `source` as a script; `args` are raw template text
    (placeholders stay as they are)."""
    script = tmp_path / f"script_{abs(hash(source))}.py"
    script.write_text(textwrap.dedent(source))
    return " ".join([shlex.quote(sys.executable), shlex.quote(str(script)), *args])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for a reaper is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def wait_dead(pid: int, within: float = 3.0) -> bool:
    with trio.move_on_after(within):
        while alive(pid):
            await trio.sleep(0.02)
        return True
    return False


async def test_prove_and_verify_round_trip(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    backend = ExternalBackend(
        cmd(tmp_path, PROVE, "{inputs}", "{proof}", "{workdir}", shlex.quote(str(record))),
        cmd(tmp_path, VERIFY, "{inputs}", "{proof}"),
        timeout_s=10,
    )
    inputs = b"prove me\x00\xff"
    with trio.fail_after(10):
        proof = await backend.prove(MARKET, inputs, 10)
        assert proof == hashlib.sha256(inputs).hexdigest().encode()
        assert await backend.verify(MARKET, inputs, proof)
        assert not await backend.verify(MARKET, inputs, b"0" * 64)
        assert not await backend.verify(MARKET, b"other inputs", proof)
    seen = json.loads(record.read_text())
    assert stat.S_IMODE(seen["mode"]) == 0o700
    assert seen["cwd"] == seen["workdir"]
    assert not Path(seen["workdir"]).exists()
    assert not Path(seen["workdir"]).parent.exists()


async def test_check_inputs(tmp_path: Path) -> None:
    backend = ExternalBackend(None, None, cmd(tmp_path, CHECK, "{inputs}"), timeout_s=10)
    with trio.fail_after(10):
        assert await backend.check_inputs(MARKET, b"good inputs")
        assert not await backend.check_inputs(MARKET, b"bad inputs")
    assert await ExternalBackend(None, None).check_inputs(MARKET, b"bad: but nobody checks")


async def test_failing_prove_reports_status_and_stderr_tail(tmp_path: Path) -> None:
    backend = ExternalBackend(cmd(tmp_path, FAIL, "{proof}"), None, timeout_s=10)
    with trio.fail_after(10), pytest.raises(ProvingError) as info:
        await backend.prove(MARKET, b"x", math.inf)
    message = str(info.value)
    assert "\n" not in message
    assert "exit status 3" in message
    assert "error line 7" in message and "error line 3" in message
    assert "error line 2" not in message  # only the last five lines


@pytest.mark.parametrize("code", [2, 3, 127])
async def test_verify_other_exit_status_is_an_error(tmp_path: Path, code: int) -> None:
    backend = ExternalBackend(None, cmd(tmp_path, EXIT, str(code)), cmd(tmp_path, EXIT, str(code)))
    with trio.fail_after(10):
        with pytest.raises(ProvingError, match=f"exit status {code}.*verifier is confused"):
            await backend.verify(MARKET, b"x", b"proof")
        with pytest.raises(ProvingError, match=f"exit status {code}"):
            await backend.check_inputs(MARKET, b"x")


async def test_timeout_kills_process_group(tmp_path: Path) -> None:
    record = tmp_path / "sleep.json"
    backend = ExternalBackend(
        cmd(tmp_path, SLEEP, shlex.quote(str(record)), "{workdir}", "{proof}"),
        cmd(tmp_path, SLEEP, shlex.quote(str(record)), "{workdir}"),
        timeout_s=1.0,
    )
    start = trio.current_time()
    with trio.fail_after(5), pytest.raises(ProvingError) as info:
        await backend.prove(MARKET, b"x", math.inf)
    assert trio.current_time() - start < 3.0
    message = str(info.value)
    assert "timed out after 1." in message and "SIGKILL" in message
    assert "working hard" in message
    pids = json.loads(record.read_text())
    assert await wait_dead(pids["parent"])
    assert await wait_dead(pids["child"])  # the grandchild went with its group
    assert not Path(pids["workdir"]).exists()

    # verify is bounded by timeout_s too, and a timeout there is an error, not False.
    record.unlink()
    with trio.fail_after(5), pytest.raises(ProvingError, match=r"verify command.*timed out"):
        await backend.verify(MARKET, b"x", b"proof")
    assert await wait_dead(json.loads(record.read_text())["child"])


async def test_prove_deadline_before_timeout(tmp_path: Path) -> None:
    record = tmp_path / "sleep.json"
    backend = ExternalBackend(
        cmd(tmp_path, SLEEP, shlex.quote(str(record)), "{workdir}", "{proof}"), None, timeout_s=60
    )
    start = trio.current_time()
    with trio.fail_after(5), pytest.raises(ProvingError, match=r"timed out after 0\."):
        await backend.prove(MARKET, b"x", 0.8)
    assert trio.current_time() - start < 3.0
    with pytest.raises(ProvingError, match="deadline reached before"):
        await backend.prove(MARKET, b"x", 0)


async def test_cancellation_kills_process_group(tmp_path: Path) -> None:
    record = tmp_path / "sleep.json"
    backend = ExternalBackend(
        cmd(tmp_path, SLEEP, shlex.quote(str(record)), "{workdir}", "{proof}"), None, timeout_s=60
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.prove, MARKET, b"x", math.inf)
            while not record.exists():
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    pids = json.loads(record.read_text())
    assert await wait_dead(pids["parent"])
    assert await wait_dead(pids["child"])
    assert not Path(pids["workdir"]).exists()


async def test_stragglers_are_killed_after_a_normal_exit(tmp_path: Path) -> None:
    record = tmp_path / "straggler.json"
    backend = ExternalBackend(
        cmd(tmp_path, STRAGGLER, shlex.quote(str(record)), "{proof}"), None, timeout_s=10
    )
    with trio.fail_after(10):
        assert await backend.prove(MARKET, b"x", math.inf) == b"done"
    assert await wait_dead(json.loads(record.read_text())["child"])


async def test_missing_or_empty_output_is_an_error(tmp_path: Path) -> None:
    missing = ExternalBackend(cmd(tmp_path, NO_OUTPUT, "{proof}"), None, timeout_s=10)
    with trio.fail_after(10), pytest.raises(ProvingError) as info:
        await missing.prove(MARKET, b"x", math.inf)
    assert "no proof file" in str(info.value)
    assert "finished without writing a proof" in str(info.value)

    empty = ExternalBackend(cmd(tmp_path, EMPTY_OUTPUT, "{proof}"), None, timeout_s=10)
    with trio.fail_after(10), pytest.raises(ProvingError, match="proof file is empty"):
        await empty.prove(MARKET, b"x", math.inf)

    fifo = ExternalBackend(cmd(tmp_path, FIFO_OUTPUT, "{proof}"), None, timeout_s=10)
    with trio.fail_after(10), pytest.raises(ProvingError, match="not a regular file"):
        await fifo.prove(MARKET, b"x", math.inf)

    big = ExternalBackend(
        cmd(tmp_path, PROVE, "{inputs}", "{proof}", "{workdir}", "/dev/null"),
        None,
        timeout_s=10,
        max_proof_bytes=10,
    )
    with trio.fail_after(10), pytest.raises(ProvingError, match="over the limit of 10"):
        await big.prove(MARKET, b"x", math.inf)


async def test_program_that_cannot_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-prover"
    backend = ExternalBackend(f"{missing} {{proof}}", f"{missing}", timeout_s=10)
    with pytest.raises(ProvingError, match="cannot start"):
        await backend.prove(MARKET, b"x", math.inf)
    with pytest.raises(ProvingError, match="cannot start"):
        await backend.verify(MARKET, b"x", b"p")


async def test_missing_commands() -> None:
    backend = ExternalBackend(None, None)
    with pytest.raises(ProvingError, match="no prove command"):
        await backend.prove(MARKET, b"x", math.inf)
    with pytest.raises(ProvingError, match="no verify command"):
        await backend.verify(MARKET, b"x", b"p")


def test_templates() -> None:
    b = ExternalBackend("'my prover' --in={inputs} --out {proof} {workdir}/x", "v '{proof}'")
    assert b.prove_argv == ("my prover", "--in={inputs}", "--out", "{proof}", "{workdir}/x")
    assert b.verify_argv == ("v", "{proof}")
    for bad in ["", "   ", "prove 'unbalanced {proof}", "prove {input} {proof}", "prove {inputs}"]:
        with pytest.raises(ValueError):
            ExternalBackend(bad, None)
    with pytest.raises(ValueError):
        ExternalBackend(None, None, timeout_s=0)
    # Braces that are not placeholders (e.g. JSON) pass through untouched.
    assert ExternalBackend(None, """v '{"k": 1}' {proof}""").verify_argv == (
        "v",
        '{"k": 1}',
        "{proof}",
    )


async def test_substitution_reaches_the_command_without_a_shell(tmp_path: Path) -> None:
    # Shell syntax in the template is passed to the program as literal arguments.
    echo = """
        import sys
        open(sys.argv[1], "w").write("\\n".join(sys.argv[2:]))
    """
    backend = ExternalBackend(
        cmd(tmp_path, echo, "{proof}", "'$HOME'", "'a;b'", "--in={inputs}", "'*'"), None
    )
    proof = (await backend.prove(MARKET, b"x", math.inf)).decode().split("\n")
    assert proof[0] == "$HOME" and proof[1] == "a;b" and proof[3] == "*"
    assert proof[2].startswith("--in=/") and proof[2].endswith("/work/inputs")


SIZE = """
    import sys
    data = open(sys.argv[1], "rb").read()
    print(data.split(b" ")[0].decode() if data[:1].isdigit() else "many")
"""


async def test_the_size_command_says_how_much_work_the_inputs_need(tmp_path: Path) -> None:
    """A zkVM market's work varies with its inputs: the size command tells the winner
    how much, to compare with the ask's declared size (core/work.py)."""
    backend = ExternalBackend(None, None, size_cmd=cmd(tmp_path, SIZE, "{inputs}"), timeout_s=10)
    with trio.fail_after(10):
        assert await backend.work_size(MARKET, b"12 cycles of work") == 12
        with pytest.raises(ProvingError, match="printed 'many', not a size"):
            await backend.work_size(MARKET, b"no number here")
        with pytest.raises(ProvingError, match="not a size"):
            await backend.work_size(MARKET, b"0 cycles")
    assert await ExternalBackend(None, None).work_size(MARKET, b"12") is None
