"""`python -m p2p_market.cli`: the `p2p-market` command without its installed script."""

from p2p_market.cli.app import main

main()
