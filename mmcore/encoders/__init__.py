"""One encoder per modality: raw tensors -> fixed-size embeddings."""

from mmcore.encoders.image_cnn import ImageCNN
from mmcore.encoders.text_rnn import TextGRU

__all__ = ["ImageCNN", "TextGRU"]
