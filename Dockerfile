# One image for every Marquee process; the command picks the service:
#   docker run IMAGE                       -> python -m web_server          (8080)
#   docker run IMAGE services.catalog      -> python -m services.catalog    (8081)
#   docker run IMAGE services.subscription -> python -m services.subscription (8082)
#   docker run IMAGE recommender serve     -> python -m recommender serve   (8083)
#   docker run IMAGE recommender worker    -> python -m recommender worker  (no port)
#   docker run IMAGE recommender train     -> python -m recommender train   (publishes a model)
#
# Build:  docker build -t marquee:0.1.0 .
#         docker build --build-arg BAKE_MODEL=0 -t marquee:0.1.0 .   (model comes from a volume)
# See docs/deploying.md.

########## builder: compilers + a virtualenv with the runtime dependencies ##########
FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build tools for any dependency without a wheel for this platform; they stay in this stage.
# The base image tag is pinned; Debian package versions follow its point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
# Only the lock file: this layer is rebuilt when the pinned runtime dependencies change, not on
# every edit. Exact versions, each file checked against its sha256 (`make lock` writes it).
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

########## runtime: no compilers, non-root, code + data + templates ##########
FROM python:3.11.13-slim-bookworm AS runtime

ARG BAKE_MODEL=1

# The code lives in /app and is run from there (not installed), so the Settings defaults that
# derive from the project root (data/, templates/) point inside the image.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MARQUEE_HOST=0.0.0.0 \
    MARQUEE_VAR_DIR=/app/var

RUN groupadd --system --gid 10001 marquee \
    && useradd --system --uid 10001 --gid marquee --no-create-home --home-dir /app marquee

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY pyproject.toml ./
COPY data/ ./data/
COPY templates/ ./templates/
COPY services/ ./services/
COPY recommender/ ./recommender/
COPY web_server/ ./web_server/

# Byte-code compiled at build time: the root filesystem is read-only at run time.
# /app/var (scratch), /models (shared model storage) and /data (the subscription store) are
# owned by the service user so that volumes mounted there start out writable by it.
RUN python -m compileall -q /app/services /app/recommender /app/web_server \
    && mkdir -p /app/var /models /data \
    && chown marquee:marquee /app/var /models /data

USER 10001:10001

# A model baked into the image (MARQUEE_MODEL_DIR defaults to /app/var/models) so that one
# `docker run` works on its own. Deployments mount shared model storage instead and point
# MARQUEE_MODEL_DIR at it. No Redis at build time; development secrets that training may
# create are removed so no secret is baked into a layer.
RUN if [ "$BAKE_MODEL" = "1" ]; then \
        MARQUEE_REDIS_URL='' python -m recommender train \
        && rm -f /app/var/secrets.json; \
    fi

EXPOSE 8080 8081 8082 8083

ENTRYPOINT ["python", "-m"]
CMD ["web_server"]
