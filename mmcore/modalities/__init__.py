"""One table of modalities. Each entry says, for its modality, which sample columns its encoder
reads, how to build the encoder, and how samples (training) and raw inputs (the registered model)
become the same model inputs. Adding a modality is a file here and a line in `MODALITIES`."""

from mmcore.modalities.base import Modality
from mmcore.modalities.image import ImageModality
from mmcore.modalities.text import TextModality

MODALITIES: dict[str, Modality] = {"image": ImageModality(), "text": TextModality()}

__all__ = ["MODALITIES", "Modality"]
