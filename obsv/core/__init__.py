"""The sans-I/O core of obsv.

Nothing in this package touches files, sockets, the clock, the environment or a
logger, and it imports nothing outside the standard library. It turns bytes that
were already read into values, and values into decisions, so that the same log
always yields the same answers (tests/test_layering.py enforces the imports).
"""
