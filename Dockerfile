# market_pipeline: the health endpoint (default), the Dagster webserver or the daemon, with the
# project installed. docker-compose.yml runs all of them with Prometheus and Grafana.
#
# Build:   docker build -t market-pipeline .
# Health endpoint (GET /health: the `market-pipeline health` JSON, 200 or 503; the HEALTHCHECK):
#   docker run -d --name mp-health -p 127.0.0.1:9464:9464 \
#     -v mp-data:/data -v mp-dagster:/opt/dagster/dagster_home --env-file .env market-pipeline
# Webserver (UI on http://127.0.0.1:3000; it has no authentication: publish it on loopback only):
#   docker run -d --name mp-web -p 127.0.0.1:3000:3000 \
#     -v mp-data:/data -v mp-dagster:/opt/dagster/dagster_home --env-file .env \
#     --no-healthcheck market-pipeline market-pipeline webserver -w workspace.yaml
# Daemon (schedules, sensors, run queue, backfills, run monitoring) from the same image,
# sharing the same DAGSTER_HOME and data volumes:
#   docker run -d --name mp-daemon \
#     -v mp-data:/data -v mp-dagster:/opt/dagster/dagster_home --env-file .env \
#     --no-healthcheck market-pipeline dagster-daemon run -w workspace.yaml
# The HEALTHCHECK asks the health endpoint of its own container, so containers running another
# command use --no-healthcheck (docker-compose.yml gives them checks of their own).
# A named volume mounted on DAGSTER_HOME is seeded with the image's dagster.yaml on first
# use; with a bind mount instead, copy dagster_home/dagster.yaml into the host directory.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PIPELINE_DATA_DIR=/data \
    NUMBA_CACHE_DIR=/tmp/numba_cache \
    PIPELINE_UI__HOST=0.0.0.0 \
    PIPELINE_UI__EXPOSED_REASON="in a container: the published port decides who reaches the UI (publish it on 127.0.0.1)"

RUN groupadd --system --gid 10001 pipeline \
    && useradd --system --uid 10001 --gid pipeline --home-dir /opt/dagster \
       --no-create-home --shell /usr/sbin/nologin pipeline

WORKDIR /opt/dagster/app

# A regular (non-editable) install; the build backend (poetry-core) is fetched by pip.
COPY pyproject.toml README.md ./
COPY market_pipeline ./market_pipeline
RUN pip install --no-cache-dir .

COPY workspace.yaml ./
COPY dagster_home/dagster.yaml ${DAGSTER_HOME}/dagster.yaml

RUN mkdir -p /data \
    && chown -R pipeline:pipeline /data ${DAGSTER_HOME}

USER pipeline

# Run history and the lake outlive the container (declared after the files they are seeded with).
VOLUME ["/data", "/opt/dagster/dagster_home"]
EXPOSE 9464 3000

# Unhealthy when /health answers 503 (something needs attention) or not at all.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/health', timeout=15)"]

CMD ["market-pipeline", "serve", "--host", "0.0.0.0", "--port", "9464"]
