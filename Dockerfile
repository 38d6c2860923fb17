# The monitor service image used by docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md LICENSE ./
COPY stream_monitor ./stream_monitor
COPY configs ./configs
COPY schemas ./schemas
RUN pip install . && useradd --create-home monitor
USER monitor

ENTRYPOINT ["stream-monitor"]
CMD ["run", "--config", "/app/configs/docker.yaml"]
