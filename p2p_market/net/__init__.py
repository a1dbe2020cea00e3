"""The network shell: a py-libp2p host (host.py), order gossip over GossipSub
(gossip.py), the frame format that carries envelopes (frame.py), and the batching
that spends a node's frame budget (batcher.py). Nothing here decides anything about
orders: validity comes from p2p_market.core."""
