"""The ``governance`` command line: the composition root of worker and producer.

It is the only code that imports both; nothing imports it. Each subcommand parses its
arguments and calls one function of ``worker`` or ``producer``.
"""
