"""One encoder per modality: raw tensors -> fixed-size embeddings.

Text encoders share one signature, (vocab_size, dim, embedding, hidden, dropout), and are chosen
by `features.text_encoder` through TEXT_ENCODERS.
"""

from mmcore.encoders.image_cnn import ImageCNN
from mmcore.encoders.text_bag import TextBag
from mmcore.encoders.text_cnn import TextCNN
from mmcore.encoders.text_rnn import TextGRU

TEXT_ENCODERS = {"gru": TextGRU, "cnn": TextCNN, "bag": TextBag}

__all__ = ["TEXT_ENCODERS", "ImageCNN", "TextBag", "TextCNN", "TextGRU"]
