# Clara image for docker-compose's `bot` profile. Installs the exact pins of requirements.lock.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CLARA_DATA_DIR=/data
COPY requirements.lock pyproject.toml README.md alembic.ini bot.py ./
COPY clara ./clara
COPY storage ./storage
COPY plugins ./plugins
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-deps -r requirements.lock && pip install --no-cache-dir --no-deps .
VOLUME /data
CMD ["clara", "chat"]
