# runtime-glue container image.
#
#   docker build -t runtime-glue .
#   docker run --read-only -p 8080:8080 -v glue-data:/var/lib/glue runtime-glue
#   docker run --read-only -p 8080:8080 -v glue-data:/var/lib/glue \
#              -v "$PWD/config.yaml:/etc/glue/config.yaml:ro" runtime-glue
#
# The first takes CloudEvents at http://localhost:8080/events with the image's default configuration
# (config/container.yaml: listens on 0.0.0.0:8080); the second runs your own.
#
# The builder stage turns the source tree into a wheel and installs it, with its dependencies, into a
# virtual environment under /opt/glue. The final stage copies only that environment onto a fresh slim
# base: no compiler, no pip, no source tree. It runs as an unprivileged user with a read-only root
# filesystem; the only writable paths are the journal volume (/var/lib/glue) and /tmp.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every dependency ships manylinux wheels for CPython 3.11, so the builder needs no compiler either.
COPY pyproject.toml README.md ./
COPY glue ./glue
COPY handlers ./handlers
COPY config/container.yaml ./
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/glue \
 && python -m pip --python /opt/glue/bin/python install --no-compile /wheels/*.whl \
 && /opt/glue/bin/python -m compileall -q /opt/glue/lib

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="runtime-glue" \
      org.opencontainers.image.description="Event-driven integration daemon for Kubernetes platforms" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# The base image's pip and setuptools are not needed at run time.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && groupadd --system --gid 10001 glue \
 && useradd --system --uid 10001 --gid glue --home-dir /var/lib/glue --no-create-home \
            --shell /usr/sbin/nologin glue \
 && mkdir -p /var/lib/glue /etc/glue \
 && chown glue:glue /var/lib/glue
COPY --from=builder /opt/glue /opt/glue
COPY --from=builder /src/container.yaml /etc/glue/config.yaml
ENV PATH=/opt/glue/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/glue"]
WORKDIR /var/lib/glue
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["glue"]
CMD ["run", "--config", "/etc/glue/config.yaml"]
