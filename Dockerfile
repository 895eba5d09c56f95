# One image for every Ferry service; the command picks the service:
#   docker run ferry python -m services.task_tracker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services \
    && touch shared/__init__.py services/__init__.py \
    && pip install . \
    && pip uninstall -y ferry \
    && rm -rf shared services build *.egg-info

# Then Ferry itself (a regular, non-editable install into site-packages).
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps . && rm -rf /src

# Non-root; /data holds the SQLite task database by default (a volume in compose).
RUN groupadd --system --gid 10001 ferry \
    && useradd --system --uid 10001 --gid ferry --home-dir /home/ferry --create-home ferry \
    && mkdir -p /data \
    && chown ferry:ferry /data
USER 10001:10001
WORKDIR /home/ferry

EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.task_tracker"]
