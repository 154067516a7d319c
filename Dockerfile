# Fender's image: Python's slim base, Fender in a virtual environment with the pinned,
# hash-checked dependencies of requirements.lock, run as a non-root user. Nothing is
# written at run time, so a read-only root filesystem works.
#
#   docker build -t fender .      (or podman build)
#   docker run --read-only -v ./config:/etc/fender:ro fender
#
# The entrypoint is `fender run`; the policy file is $FENDER_CONFIG
# (/etc/fender/fender.yaml) unless `-c FILE` is given as the argument.

ARG PYTHON_IMAGE=docker.io/library/python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
# Every package comes pinned and hash-checked: the runtime's into /opt/fender, the build
# backend into a venv of its own that the image leaves behind.
RUN python -m venv /opt/fender \
    && /opt/fender/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock \
    && python -m venv /build \
    && /build/bin/pip install --require-hashes --only-binary=:all: -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# --no-deps: every dependency came from the lock above, and `pip check` proves the set whole.
RUN /build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/fender/bin/pip install --no-deps /wheels/fender-*.whl \
    && /opt/fender/bin/pip check \
    && /opt/fender/bin/fender version

FROM ${PYTHON_IMAGE}
# A numeric user, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN useradd --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin fender
COPY --from=build /opt/fender /opt/fender
ENV PATH=/opt/fender/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FENDER_CONFIG=/etc/fender/fender.yaml
USER 10001:10001
# 15000: the data listener of the bundled examples (listeners are set in the policy file);
# 9901: metrics, probes and the control API.
EXPOSE 15000 9901
ENTRYPOINT ["fender", "run"]
