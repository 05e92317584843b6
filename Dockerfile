# sci-fetch in a container: `docker run ... sci-fetch download` with settings from /config/settings.toml
# and SCI_FETCH_* variables, output and manifest under the /data volume. See docs/docker.md.
#
#   docker build -t sci-fetch .
#   docker build --build-arg BASE_IMAGE=python:3.11-slim -t sci-fetch .      # another slim Python base
#
# BASE_IMAGE may be any Debian-like image with python3 (>= 3.11) and its venv module; the image test
# (tests/image/) builds on a debootstrapped Debian bookworm. Offline builds: pass PIP_NO_INDEX=1 and
# PIP_FIND_LINKS=<folder of wheels visible to RUN> (see docs/docker.md).

ARG BASE_IMAGE=python:3.12-slim

# ---- build: a virtualenv in /opt/venv with sci-fetch and its dependencies ----------------------
FROM ${BASE_IMAGE} AS build

# pip reads these from the environment when they are given; unset, pip uses its defaults.
# PIP_INDEX_URL: a package mirror. PIP_NO_INDEX=1 + PIP_FIND_LINKS=DIR: offline, from a wheel folder.
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c 'import tomllib; deps = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]; open("/src/requirements.txt", "w").write("\n".join(deps) + "\n")' \
 && /opt/venv/bin/pip install --no-cache-dir -r /src/requirements.txt

COPY README.md /src/README.md
COPY sci_fetch /src/sci_fetch
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /src \
 && /opt/venv/bin/sci-fetch --version

# ---- runtime -----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sci-fetch" \
      org.opencontainers.image.description="Resumable, verified download of the camera-trap images a COCO Camera Traps file names from S3" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can check it and volumes can be chowned to it.
RUN groupadd --gid 10001 sci \
 && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /home/sci --create-home --shell /usr/sbin/nologin sci \
 && mkdir -p /data /config \
 && chown 10001:10001 /data \
 && chmod 0755 /home/sci

# HOME makes ~/.aws mean /home/sci/.aws whatever uid the container runs as (docker run --user).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/sci \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SCI_FETCH_CONFIG=/config/settings.toml \
    SCI_FETCH_METRICS_HOST=0.0.0.0

COPY --from=build /opt/venv /opt/venv
# The shipped settings (profile "animl", the Animl bucket and region); mount your own /config to change them.
COPY settings.toml /config/settings.toml
COPY deploy/docker/healthcheck.py /usr/local/bin/sci-fetch-healthcheck
RUN chmod 0755 /usr/local/bin/sci-fetch-healthcheck \
 && sci-fetch --version

USER 10001:10001
# Relative paths (the default output "images", a COCO file named "export.json") are under /data.
WORKDIR /data
VOLUME ["/data"]

# The engine's shutdown: on SIGTERM it takes no new keys, gives in-flight downloads grace_seconds (10),
# flushes the manifest and exits 143. Give the container more than that before SIGKILL:
# `docker stop -t 30`, `docker run --stop-timeout 30`, Kubernetes terminationGracePeriodSeconds: 30.
STOPSIGNAL SIGTERM

# Unhealthy when this container's download stops writing its manifest for HEALTHCHECK_MAX_AGE
# seconds (default 120), or when its last run ended with a non-zero exit code.
HEALTHCHECK --interval=30s --timeout=20s --start-period=120s --retries=3 CMD ["sci-fetch-healthcheck"]

ENTRYPOINT ["sci-fetch"]
CMD ["download"]
