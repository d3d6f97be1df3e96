# The modelmon image of the compose stack. One image, six services of docker-compose.yml:
# the demo model service (the default command), the traffic generator, the alert sink,
# the runbooks server (docs/runbooks, mounted),
# the log shipper (`modelmon ship`) and the one-shot setup (`modelmon setup`).
#
# Build context: the repository root (see .dockerignore). The demo model is trained here,
# at build time, from demo/data/: nothing is downloaded when a container starts.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package with the extras the stack needs: demo (scikit-learn, pandas, Flask,
# gunicorn, requests) and elastic (the Elasticsearch client for ship and setup).
# README.md is read by the package metadata (pyproject.toml `readme`); elk/ holds the
# Elasticsearch/Kibana assets the package carries for `modelmon setup` (through the
# symlink exporters/modelmon/pipeline/elk, so it is copied first).
COPY pyproject.toml README.md ./
COPY elk ./elk
COPY exporters ./exporters
RUN pip install ".[demo,elastic,redis]"

# The demo service and its data.
COPY demo ./demo
RUN python -m demo.train

# Run as an unprivileged user. The directories below are the mount points of the named
# volumes (events, outcomes, shipper-state): Docker copies their owner into a volume
# when it creates it, so the services can write there without running as root.
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin modelmon \
    && install -d -o modelmon -g modelmon /var/log/modelmon /var/lib/modelmon /var/lib/modelmon-shipper
USER modelmon

# 8000 demo service, 9098 runbooks, 9099 alert sink, 9108 shipper metrics.
EXPOSE 8000 9098 9099 9108

# The demo service; PROMETHEUS_MULTIPROC_DIR must be set (docker-compose.yml sets it on
# this service only: in any other process it would switch prometheus-client's metrics
# to files).
CMD ["gunicorn", "-c", "demo/gunicorn.conf.py", "demo.service:app"]
