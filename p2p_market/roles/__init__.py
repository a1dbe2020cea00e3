"""What users run on top of a node: the prover (bids, commits, proves, delivers) and
the requester (asks, sends inputs to winners, verifies, signs receipts)."""
