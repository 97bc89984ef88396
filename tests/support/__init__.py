"""Test support: finding the real services, worker processes, event listeners."""
