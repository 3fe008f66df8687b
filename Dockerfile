# market_pipeline: Dagster webserver (default) or daemon, with the project installed.
#
# Build:   docker build -t market-pipeline .
# Webserver (UI on http://localhost:3000):
#   docker run -d --name mp-web -p 127.0.0.1:3000:3000 \
#     -v mp-data:/data -v mp-dagster:/opt/dagster/dagster_home --env-file .env market-pipeline
# Daemon (schedules, sensors, run queue, backfills, run monitoring) from the same image,
# sharing the same DAGSTER_HOME and data volumes:
#   docker run -d --name mp-daemon \
#     -v mp-data:/data -v mp-dagster:/opt/dagster/dagster_home --env-file .env \
#     market-pipeline dagster-daemon run -w workspace.yaml
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

VOLUME ["/data"]
EXPOSE 3000

# The UI on PIPELINE_UI__HOST:PIPELINE_UI__PORT (0.0.0.0:3000 in the image, with its reason above).
CMD ["market-pipeline", "webserver", "-w", "workspace.yaml"]
