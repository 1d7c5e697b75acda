# The online service: onnxruntime-gpu on a CUDA runtime (it falls back to CPU when
# the container gets no GPU), no torch. The model store is a volume at /models.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/cmr
ENV PATH=/opt/cmr/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY model_store ./model_store
COPY service ./service
COPY cmr ./cmr

RUN pip install ".[serve]"

RUN useradd --system --uid 10001 --home-dir /app cmr
USER cmr
ENV CMR_STORE=/models CMR_REDIS_URL=redis://redis:6379/0
VOLUME ["/models"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://localhost:8000/livez || exit 1
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
