# syntax=docker/dockerfile:1
# Multi-stage: a build stage with the compiler-free wheels, slim runtime stages, non-root user.
#   CPU (default):   docker build -t saring .
#   CUDA:            docker build --build-arg TORCH_FLAVOUR=cu128 -t saring:gpu .
#   training image:  docker build --target train -t saring-train .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
# cpu, or a CUDA flavour of the PyTorch wheel index (cu126, cu128, ...)
ARG TORCH_FLAVOUR=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_FLAVOUR}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/saring
ENV PATH=/opt/saring/bin:$PATH
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
# redis and postgres: the scale-out extras (SARING_FLOOD_REDIS_URL, SARING_FEEDBACK_DB_URL with PostgreSQL).
RUN pip install ".[onnx,redis,postgres]"

FROM build AS build-train
RUN pip install ".[onnx,redis,postgres,train]"

FROM python:${PYTHON_VERSION}-slim AS api
RUN useradd --system --uid 10001 --home-dir /app saring \
    && mkdir -p /var/lib/saring && chown saring /var/lib/saring
COPY --from=build /opt/saring /opt/saring
ENV PATH=/opt/saring/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SARING_HOST=0.0.0.0 \
    SARING_PORT=8000 \
    SARING_MODEL_DIR=/models/default \
    SARING_FEEDBACK_DB_PATH=/var/lib/saring/feedback.sqlite3
WORKDIR /app
USER saring
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"SARING_PORT\"]}/readyz', timeout=2)"
CMD ["python", "-m", "service"]

FROM python:${PYTHON_VERSION}-slim AS train
RUN useradd --system --uid 10001 --home-dir /app saring
COPY --from=build-train /opt/saring /opt/saring
ENV PATH=/opt/saring/bin:$PATH PYTHONUNBUFFERED=1 HF_HOME=/app/.cache/huggingface
WORKDIR /app
COPY --chown=saring data ./data
USER saring
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]
