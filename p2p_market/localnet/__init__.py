"""`p2p-market simulate`: a real local multi-node market (one process per node on
127.0.0.1) driven by a scenario file, with live progress, agreement checks across
the nodes' final states, and a report folder (summary.json, plots, index.html)."""
