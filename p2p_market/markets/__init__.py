"""Which market: descriptor files (descriptor.py) and the public devnet (devnet.py)."""
