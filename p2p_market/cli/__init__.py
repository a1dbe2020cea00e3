"""The `p2p-market` command: one module per group of commands, assembled in app.py.

Nothing is imported here, so that a module of the package (common.py, used by every
command) can be imported without loading every command and what it pulls in."""
