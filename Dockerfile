# dlproxy: the built-in minilm exported at build time, served by the core install (no torch).
#   docker build -t dlproxy:0.1.0 .
#   docker run --rm -p 8000:8000 -e DLPROXY_ADMIN_TOKEN=change-me dlproxy:0.1.0
# Checked with hadolint in the test suite; not built there (no registry to pull the base from).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# An exporting environment: dlproxy with the minilm extra (torch), used only to export.
RUN python -m venv /opt/export \
    && /opt/export/bin/pip install --no-cache-dir ".[minilm]" \
    && DLPROXY_HOME=/opt/dlproxy-home /opt/export/bin/dlproxy models --export minilm:int8 minilm:fp32
# The runtime environment: the core only.
RUN python -m venv /opt/dlproxy \
    && /opt/dlproxy/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin dlproxy
COPY --from=build /opt/dlproxy /opt/dlproxy
COPY --from=build --chown=dlproxy:dlproxy /opt/dlproxy-home /home/dlproxy/.cache/dlproxy
ENV PATH=/opt/dlproxy/bin:$PATH \
    DLPROXY_HOME=/home/dlproxy/.cache/dlproxy \
    DLPROXY_HOST=0.0.0.0 \
    DLPROXY_PORT=8000 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/dlproxy
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["dlproxy", "serve", "--model", "minilm:int8", "--log-format", "json"]
