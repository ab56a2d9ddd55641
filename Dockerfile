# The API and the worker share one image; the compose file picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY cortex ./cortex
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY bench ./bench
COPY worker.py ./
RUN pip install --no-cache-dir .

RUN useradd --system --uid 10001 cortex
USER cortex
EXPOSE 8000
CMD ["cortex-realtime", "api", "--host", "0.0.0.0", "--port", "8000"]
