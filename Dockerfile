# GAN Studio as a Docker Space (or any container host): python app.py on port 7860.
FROM python:3.11-slim

# Spaces run containers as uid 1000; the studio's home must be writable by that user.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    STUDIO_HOME=/home/user/.cache/gan-studio \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1
WORKDIR /home/user/app

COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --user -r requirements.txt
COPY --chown=user . .
RUN mkdir -p "$STUDIO_HOME"

EXPOSE 7860
CMD ["python", "app.py"]
