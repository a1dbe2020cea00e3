"""The deterministic core: no I/O, no clock, no randomness; time is a parameter.

Everything that decides who proves what lives here, so that every node, the
simulator and the tests run exactly the same code on the same inputs.
"""
