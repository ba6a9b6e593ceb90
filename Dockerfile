# The apps' image, used by every service of docker-compose.yml that runs Python (the servers
# and the one-shot `seed`). Build context: the project root, filtered by .dockerignore.
# PYTHON_IMAGE: the same image under another name, for users behind a mirror or registry proxy
# (compose passes ${PYTHON_IMAGE:-python:3.11-slim}).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The apps' pinned packages (the harness and the tests have their own locks, not needed here).
COPY requirements-app.lock ./
RUN pip install --no-cache-dir -r requirements-app.lock

# app/ and servers/ for the servers and for `python -m servers.seed_db` (which resets the data
# set with app.dataset.reset_dataset). Owned by root, so the app user cannot change it.
COPY . .

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin bench
USER bench

EXPOSE 8000-8007

# No CMD of the project's own: each compose service's `command` is the argv from
# servers/registry.py, rendered by `python -m servers.compose`.
