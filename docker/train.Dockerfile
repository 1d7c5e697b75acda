# Training and export (torch, CPU wheel); publishes into the model-store volume.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY model_store ./model_store
COPY service ./service
COPY cmr ./cmr
COPY training ./training
COPY scripts ./scripts
COPY configs ./configs
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.*" \
    && pip install ".[train]"

RUN useradd --system --uid 10001 --home-dir /app cmr && mkdir -p /runs && chown cmr /runs
USER cmr
VOLUME ["/data", "/models", "/runs"]
# Train on /data, then export and make the new version current in /models.
CMD ["bash", "scripts/train-and-publish.sh", "/data", "/runs/latest", "/models"]
