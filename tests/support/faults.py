"""Command id prefixes the test-only fault app (``tests/system/faults_app.py``) reacts to.

Kept apart from that module, which patches the worker when imported: a test that only needs
the names must not patch the worker in its own process.
"""

from __future__ import annotations

#: The handler raises for these, every time.
POISON_PREFIX = "poison-"
#: The process applying these SIGKILLs itself, every time (holding the row lock).
KILLER_PREFIX = "killer-"
#: The database refuses the transaction of these (a program limit), every time.
LIMIT_PREFIX = "limit-"
