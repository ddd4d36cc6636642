"""UnivNet-trained vocoder: the generator is the causal HiFi-GAN one (only the discriminator differs)."""

from models.vocoder.HiFiGAN import Generator

__all__ = ["Generator"]
