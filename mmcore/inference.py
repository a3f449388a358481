"""The whole inference chain as one module: raw image + raw text -> class probabilities.

raw input -> model inputs (`Modality.from_raw`: the same pixel scale and text encoding that
preprocessing used) -> each encoder with its input layer (pixel standardisation) -> projections
into the shared space -> fusion -> head. Built from the stages' output folders, saved as one
folder that the logged MLflow model carries: `chain.json` (the spec: class names, vocabulary,
pixel scale and standardisation, encoder and head settings) and `chain.safetensors` (every
weight). Neither is a pickle: loading one runs no code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from mmcore.config import FeaturesConfig, TrainingConfig
from mmcore.fusion.fusion_classifier import BLANK, EVIDENCE, build_classifier
from mmcore.io.parquet import read_metadata
from mmcore.modalities import MODALITIES
from mmcore.modalities.encoder_classifier import EncoderClassifier, load_encoder
from mmcore.stages.shared_space import SharedSpace

# What the chain keeps of the samples' metadata (preprocessing's transforms and class names).
SAMPLE_KEYS = ("class_names", "modalities", "image_shape", "pixel_max", "image_mean", "image_std",
               "lowercase", "max_text_tokens", "vocab_size")


class InferenceChain(nn.Module):
    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = spec
        feats = FeaturesConfig(**spec["features"])
        n_classes = len(spec["class_names"])
        self.modalities = spec["modalities"]
        self.encoders = nn.ModuleDict({m: EncoderClassifier(m, feats, spec, n_classes)
                                       for m in self.modalities})
        dims = {m: e.encoder.dim for m, e in self.encoders.items()}
        self.space = (SharedSpace(dims, spec["shared_dim"], n_classes)
                      if len(self.modalities) > 1 else None)
        plan = spec["plan"]
        self.classifier = build_classifier(TrainingConfig(**spec["training"]), plan["train"],
                                           spec["shared_dim"], n_classes,
                                           spec.get("evidence_dims"))

    @classmethod
    def from_stage_dirs(cls, samples: Path, features: Path, fusion: Path, training: Path,
                        features_cfg: dict[str, Any]) -> InferenceChain:
        meta = read_metadata(samples / "train.parquet")
        vocab = (pq.read_table(samples / "vocab.parquet", columns=["token"]).column("token")
                 .to_pylist() if (samples / "vocab.parquet").exists() else [])
        head = json.loads((training / "classifier.json").read_text())
        spec = {**{k: meta[k] for k in SAMPLE_KEYS}, "vocab": vocab, "features": features_cfg,
                "shared_dim": head["dim"], "plan": head["plan"], "training": head["training"],
                "evidence_dims": head.get("evidence_dims")}
        chain = cls(spec)
        for m, enc in chain.encoders.items():
            load_encoder(enc, _tuned(training, features, f"encoder_{m}.pt"))
        if chain.space is not None:
            chain.space.load_state_dict(torch.load(_tuned(training, fusion, "projections.pt"),
                                                   weights_only=True))
        chain.classifier.load_state_dict(torch.load(training / "classifier.pt",
                                                    weights_only=True))
        return chain.eval()

    def save(self, folder: Path) -> Path:
        """`chain.json` (the spec) and `chain.safetensors` (the weights) in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "chain.json").write_text(json.dumps(self.spec))
        save_model(self, str(folder / "chain.safetensors"))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> InferenceChain:
        """The chain `save` wrote; every weight must be there, and no other."""
        folder = Path(folder)
        chain = cls(json.loads((folder / "chain.json").read_text()))
        load_model(chain, str(folder / "chain.safetensors"))  # strict
        return chain.eval()

    def predict_proba(self, images: list[Any] | None = None, texts: list[str] | None = None,
                      ) -> np.ndarray:
        """(N, n_classes) probabilities. Images: raw pixel values, one H x W (or C x H x W)
        array per row, on the source's scale (0-16 for the built-in digits, 0-255 for MNIST)."""
        _, logits = self.embed_and_score(images, texts)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    @torch.no_grad()
    def embed_and_score(self, images: list[Any] | None = None, texts: list[str] | None = None,
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each test modality's embedding (in the shared space when there is one) and the
        classifier's logits, (N, n_classes): what the drift checks profile a batch with."""
        raw = {"image": images, "text": texts}
        plan = self.spec["plan"]
        needed = plan["test"]
        missing = [m for m in needed if raw.get(m) is None]
        if missing:
            raise ValueError(f"this model needs inputs for {needed}; missing {missing}")
        embedded = {k: v for m in needed
                    for k, v in self.embed(m, MODALITIES[m].from_raw(raw[m], self.spec)).items()}
        logits = self.classifier(self.as_trained(embedded))
        return {m: embedded[m].numpy() for m in needed}, logits.numpy()

    @torch.no_grad()
    def embed(self, modality: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{modality: its shared embeddings, `blank.<modality>`: its blank rows,
        `evidence.<modality>`: its raw-input evidence} of a batch of model inputs (the
        classifier's input; `mmcore.fusion.fusion_classifier`)."""
        return self._shared(modality, batch)

    def _shared(self, modality: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.encoders[modality].embed(batch)
        if self.space is not None:
            z = self.space.heads[modality](z)
        spec = MODALITIES[modality]
        return {modality: z, BLANK + modality: spec.blank(batch),
                EVIDENCE + modality: spec.evidence(batch)}

    def trained_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The classifier's input for a batch of model inputs of the modalities it was trained
        on (every modality's columns in one dict), with gradients: what fine-tuning trains
        through (`mmcore.finetune`)."""
        return {k: v for m in self.spec["plan"]["train"] for k, v in self._shared(m, batch).items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.trained_inputs(batch))

    def loss(self, batch: dict[str, torch.Tensor], labels: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's training loss, through the encoders (`classification_loss`)."""
        return self.classifier.loss(self.trained_inputs(batch), labels)

    def as_trained(self, embedded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embeddings keyed by test modality -> keyed by the modality the classifier was
        trained on (they differ for cross-modal models); test modalities absent are left out."""
        plan = self.spec["plan"]
        out = {}
        for train, test in zip(plan["train"], plan["test"], strict=True):
            for prefix in ("", BLANK, EVIDENCE):
                if prefix + test in embedded:
                    out[prefix + train] = embedded[prefix + test]
        return out


def _tuned(training: Path, stage: Path, name: str) -> Path:
    """A weights file: the training stage's fine-tuned copy (`training.finetune`) if it wrote
    one, else the stage's own."""
    return training / name if (training / name).exists() else stage / name
