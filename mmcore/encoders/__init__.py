"""One encoder per modality: raw tensors -> fixed-size embeddings.

Text encoders share one signature, (vocab_size, dim, embedding, hidden, dropout), and are chosen
by `features.text_encoder` through TEXT_ENCODERS. An encoder with a `prime(batches, n_classes)`
method is given the labelled train batches once before it trains (`nbbag`: its n-gram weights;
`nbsvm`: its whole fit).
"""

from mmcore.encoders.image_cnn import ImageCNN
from mmcore.encoders.text_bag import TextBag
from mmcore.encoders.text_cnn import TextCNN
from mmcore.encoders.text_nbbag import TextNBBag
from mmcore.encoders.text_nbsvm import TextNBSVM
from mmcore.encoders.text_rnn import TextGRU

TEXT_ENCODERS = {"gru": TextGRU, "cnn": TextCNN, "bag": TextBag, "nbbag": TextNBBag,
                 "nbsvm": TextNBSVM}

__all__ = ["TEXT_ENCODERS", "ImageCNN", "TextBag", "TextCNN", "TextGRU", "TextNBBag", "TextNBSVM"]
