"""The environment the tests run in, whatever the contributor's shell exports.

The service's settings are ``GOVERNANCE_*`` variables, and anyone who followed the
deployment steps has some exported (a broker URL, ``GOVERNANCE_AUTH=off`` on a development
box). A test that inherited them would consume another vhost or run in another trust mode
and fail for reasons that have nothing to do with what it tests. So the suite drops every
setting from its own process at start, and every process it starts gets exactly the
settings the test names on top of the service's defaults. Only the suite's own controls
(``GOVERNANCE_TEST_*``, ``GOVERNANCE_REQUIRE_SERVICES``) are read from the shell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

#: The service's settings, and OpenTelemetry's (an exporter named in the shell would send
#: the tests' spans elsewhere, or make a test that runs without one run with one).
SETTINGS_PREFIXES = ("GOVERNANCE_", "OTEL_")
#: What a contributor (and CI) may set for the suite itself: where the services are, and
#: whether their absence fails the run.
SUITE_CONTROLS_PREFIX = "GOVERNANCE_TEST_"
SUITE_CONTROLS = frozenset({"GOVERNANCE_REQUIRE_SERVICES"})
#: Other variables that would change what the service or a test's own client does: a
#: metrics directory shared by every worker, libpq options merged into every connection,
#: and a proxy that the scrape of a worker's metrics endpoint would go through.
FOREIGN_TO_THE_SUITE = frozenset(
    {
        "PROMETHEUS_MULTIPROC_DIR",
        "PGOPTIONS",
        "PGTARGETSESSIONATTRS",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    }
)


def is_service_setting(name: str) -> bool:
    """Whether ``name`` is a setting of the service (or one that changes what the suite's
    clients do) rather than a control of the suite."""
    if name in FOREIGN_TO_THE_SUITE:
        return True
    return (
        name.startswith(SETTINGS_PREFIXES)
        and not name.startswith(SUITE_CONTROLS_PREFIX)
        and name not in SUITE_CONTROLS
    )


def drop_service_settings(environ: MutableMapping[str, str]) -> list[str]:
    """Remove every service setting from ``environ``; the names removed."""
    names = sorted(name for name in environ if is_service_setting(name))
    for name in names:
        del environ[name]
    return names


def child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment of a process a test starts: this process's, without any setting of
    the service or control of the suite, then exactly ``settings``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(SETTINGS_PREFIXES) and k not in FOREIGN_TO_THE_SUITE
    }
    return {**base, **settings}
