# One image for every process of the deployment: migrate, worker, beat and the CLI.
# It runs the service only: the benchmark and the demo's embedded PostgreSQL stay out.
# The Python the lock is compiled for (its --python-version) and CI tests on.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The locked runtime dependencies first, each checked against its hash, so that a change of
# the code alone reuses this layer. requirements.lock is generated from pyproject.toml:
#   uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
#       --no-config -o requirements.lock
COPY requirements.lock build-requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock -r build-requirements.lock

COPY pyproject.toml README.md ./
COPY governance ./governance
COPY governance_cli ./governance_cli
COPY worker ./worker
COPY producer ./producer
COPY governance_console ./governance_console
# The project itself adds no dependency the lock did not pin; pip check proves the lock whole.
# Built with the locked backend (no build isolation: nothing is fetched unpinned).
# /keys: where the worker key lives (a volume in docker compose, which takes this directory's
# owner when it is first mounted, so the unprivileged user can write the key there).
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && useradd --create-home --uid 10001 governance \
    && install -d -o governance -g governance -m 0700 /keys

USER governance
# Celery's beat keeps its schedule file here.
WORKDIR /home/governance
CMD ["governance", "--help"]
