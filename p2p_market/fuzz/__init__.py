"""Coverage-guided fuzzing of every parser that reads bytes from outside: envelopes,
gossip frames, the sync, direct-delivery and peer-exchange streams, config and key
files (`p2p-market fuzz`).

Each target states its parser's contract: the parser returns a value or raises the
project's own named rejection (a verdict, a FrameError, a WireError, a ConfigError,
...). Anything else, a TypeError or a RecursionError say, is a crash: it would escape
the code that catches the named rejection and take down a stream handler, a
validator or a command with a traceback. The targets run under atheris (libFuzzer)
in a subprocess each (`runner.py`, `worker.py`), and replay in plain Python
(`replay.py`), so that every crash found once stays a test.

Layer: beside bench/ and dst/, above node/ (the targets import core, net and node).
"""
