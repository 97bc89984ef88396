# One image for every process of the deployment: migrate, worker, beat and the CLI.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY governance ./governance
COPY governance_cli ./governance_cli
COPY worker ./worker
COPY producer ./producer
COPY bench ./bench
RUN pip install . \
    && useradd --create-home --uid 10001 governance

USER governance
# Celery's beat keeps its schedule file here.
WORKDIR /home/governance
CMD ["governance", "--help"]
