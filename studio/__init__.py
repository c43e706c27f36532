"""GAN Studio: a browser studio for exploring and fine-tuning pretrained GANs."""

__version__ = "0.1.0"
