# One image for the four services (gateway, hours, budget, settlement) and the one-shot topic creation;
# docker-compose.yml chooses what each container runs with `command`. Build: docker compose build.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ZORGPOT_DATA_DIR=/data \
    ZORGPOT_BROKER_PROFILE=kafka

WORKDIR /app
COPY pyproject.toml requirements.lock ./
COPY shared ./shared
COPY services ./services
COPY ops ./ops
# Every version from the lock file, the same set the tests ran with; no test extras in the image.
RUN pip install -c requirements.lock . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin zorgpot \
    && mkdir -p /data \
    && chown zorgpot /data

USER zorgpot
# The gateway on 8000; the stream services' internal views (/internal/health, /metrics) on 8001..8003.
EXPOSE 8000 8001 8002 8003
CMD ["python", "-m", "services.gateway"]
