"""The bench's reading of py-spy's raw stacks: waits counted apart, the project's own
functions told from libraries' modules of the same name."""

from __future__ import annotations

from bench.profile import summarize

RAW = "\n".join(
    [
        "main (celery/bin/celery.py:1);asynloop (celery/worker/loops.py:2);"
        "flush (/srv/app/worker/app.py:3);iterencode (json/encoder.py:4) 6",
        "main (celery/bin/celery.py:1);asynloop (celery/worker/loops.py:2);"
        "flush (/srv/app/worker/app.py:3);"
        "BasePipeline._communicate_gen (psycopg/_pipeline_base.py:5) 3",
        "main (celery/bin/celery.py:1);poll (kombu/utils/eventio.py:6);"
        "_epoll.poll (utils/eventio.py:7) 1",
        "not a stack line",
    ]
)


def test_samples_waiting_on_a_socket_are_counted_apart_from_running_ones() -> None:
    summary = summarize(RAW)
    assert summary["samples"] == 10
    assert summary["waiting_share"] == 0.4
    assert summary["self"] == [{"function": "iterencode (json/encoder.py)", "share": 0.6}]


def test_only_the_projects_own_functions_are_ranked_inclusively() -> None:
    ranked = summarize(RAW)["project_inclusive"]
    assert ranked == [{"function": "flush (worker/app.py)", "share": 0.6}]
