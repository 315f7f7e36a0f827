FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
# The locked dependencies first (exact versions, checked against their hashes: `make lock`),
# in a layer of their own that a change to the code does not rebuild; then the service alone.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 10001 app

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=2)"]
# uvicorn finishes open requests on SIGTERM; compose and Kubernetes send it on stop.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
