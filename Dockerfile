# GAN Studio as a Docker Space (or on any container host): python app.py on port 7860.
FROM python:3.11-slim

# Spaces run the container as uid 1000: everything the studio writes (its home with models, data sets
# and jobs; the Hugging Face cache for pulled models; pip's downloads of on-demand weights) lives in
# that user's home, so no path needs root.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    STUDIO_HOME=/home/user/.cache/gan-studio \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1
# Made by the user, not by WORKDIR, which would make the folder root's.
RUN mkdir -p "$HOME/app" "$STUDIO_HOME"
WORKDIR /home/user/app

# Requirements first, so a code change does not reinstall them. From PyPI, torch is the CUDA build:
# on GPU hardware the engine uses the GPU with no setting, and on CPU hardware it runs on the CPU.
COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --user -r requirements.txt
COPY --chown=user . .

EXPOSE 7860
CMD ["python", "app.py"]
