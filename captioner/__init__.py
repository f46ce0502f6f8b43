"""captioner: Show, Attend and Tell image captioning with attention you can look at."""

from captioner.decoding import Caption, caption_images
from captioner.hub import load_model
from captioner.model import Captioner, CaptionerConfig, WeightsError
from captioner.preprocess import ImageError, load_image
from captioner.vocab import Vocabulary

__all__ = ["Caption", "Captioner", "CaptionerConfig", "ImageError", "Vocabulary",
           "WeightsError", "caption_images", "load_image", "load_model"]
