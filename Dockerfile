# Rapport API image. Build: docker build -t rapport .   Run: see compose.yaml
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY engine engine
COPY feature_store feature_store
COPY training training
COPY experiments experiments
COPY api api
COPY rapport_client rapport_client
RUN python -m venv /opt/rapport && /opt/rapport/bin/pip install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /var/lib/rapport --create-home rapport
COPY --from=build /opt/rapport /opt/rapport
ENV PATH=/opt/rapport/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAPPORT_STORE=sqlite:////var/lib/rapport/rapport.db
USER rapport
WORKDIR /var/lib/rapport
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["rapport", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
