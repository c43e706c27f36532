"""Entry point: build the studio on the default model and serve it (the Space's app_file).

Honours GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (default 127.0.0.1:7860).
"""

from studio.ui import launch

if __name__ == "__main__":
    launch()
