# steward: the bot and its CLI, on the locked dependencies.
FROM python:3.11-slim

ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy PYTHONUNBUFFERED=1 STEWARD_HOME=/data
RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY bot ./bot
COPY graph ./graph
COPY memory ./memory
COPY connectors ./connectors
COPY processes ./processes
RUN uv sync --locked --no-dev

RUN useradd --create-home steward && mkdir -p /data && chown steward /data && chmod 700 /data
USER steward
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["/app/.venv/bin/steward"]
CMD ["run"]
