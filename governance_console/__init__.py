"""The approver console: people approve from a browser, with their own passkey as the
signature.

The console holds no signing key. It reads through the query side
(:class:`producer.queries.Queries`), relays the commands the browser signed (through
:class:`producer.client.GovernanceClient`, which sends a command that carries ``auth``
exactly as given) and streams their outcomes (server-sent events fed by a subscription to
``governance.events``). Its only writes are the registry's enrollment of a passkey by a
one-time link (:mod:`worker.enrollment`).
"""
