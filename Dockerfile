# obsv: `make image`, then see the README's Deployment section.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OBSV_HOST=0.0.0.0 \
    OBSV_PORT=8000 \
    OBSV_EVENT_LOG=/data/events.jsonl \
    OBSV_OUTBOX_DIR=/data/outbox \
    OBSV_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY obsv ./obsv
RUN pip install . && useradd --system --uid 10001 --home-dir /data obsv \
    && mkdir -p /data && chown obsv /data

USER obsv
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# SIGTERM stops cleanly (snapshot written); give it time before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["obsv", "serve"]
