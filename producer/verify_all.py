"""``governance verify --all``: every request verified a page at a time, in this process or in
several (each with its own connection and its own copy of the registry's and the policies'
histories), the pages' results handed back in order.

Verification is CPU-bound (a signature and a re-execution per kept command), so on a machine
with several cores ``jobs`` processes go about ``jobs`` times as fast.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg

from governance.replay import Deployment
from producer.audit import (
    PAGE_SIZE,
    AnchoredHead,
    Findings,
    head_of,
    read_all_request_ids,
    read_request_histories,
    reexecution_from_database,
)
from producer.reexecution import Reexecution


@dataclass
class PageResult:
    """One page's findings, and each of its requests' chain head (what an anchor holds)."""

    findings: Findings = field(default_factory=Findings)
    heads: dict[str, AnchoredHead] = field(default_factory=dict)


def _pages(conn: psycopg.Connection[Any], page_size: int) -> Iterator[list[str]]:
    page: list[str] = []
    for request_id in read_all_request_ids(conn, page_size=page_size):
        page.append(request_id)
        if len(page) == page_size:
            yield page
            page = []
    if page:
        yield page


def _verify_page(
    conn: psycopg.Connection[Any],
    reexecution: Reexecution,
    request_ids: list[str],
    require_signed: bool,
) -> PageResult:
    result = PageResult()
    for history in read_request_histories(conn, request_ids):
        result.findings.merge(
            history.verify(require_signed=require_signed, reexecution=reexecution)
        )
        result.heads[history.request_id] = head_of(history)
    return result


#: A verifying process's own connection and histories (set by its initializer).
_process: dict[str, Any] = {}


def _start_process(database_url: str, deployment: Deployment, require_signed: bool) -> None:
    conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    _process.update(
        conn=conn,
        reexecution=reexecution_from_database(conn, deployment),
        require_signed=require_signed,
    )


def _verify_page_in_process(request_ids: list[str]) -> PageResult:
    return _verify_page(
        _process["conn"], _process["reexecution"], request_ids, _process["require_signed"]
    )


def verify_all(
    conn: psycopg.Connection[Any],
    database_url: str,
    *,
    require_signed: bool = False,
    deployment: Deployment | None = None,
    jobs: int = 1,
    page_size: int = PAGE_SIZE,
) -> Iterator[PageResult]:
    """Every request's verification, a page at a time in request order: in this process on
    ``conn`` (``jobs`` 1), or in ``jobs`` processes of their own connecting to
    ``database_url`` (started afresh, not forked: nothing of this process's connection is
    shared)."""
    deployment = deployment or Deployment()
    if jobs <= 1:
        reexecution = reexecution_from_database(conn, deployment)
        for page in _pages(conn, page_size):
            yield _verify_page(conn, reexecution, page, require_signed)
        return
    with ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_process,
        initargs=(database_url, deployment, require_signed),
    ) as pool:
        yield from pool.map(_verify_page_in_process, _pages(conn, page_size))
