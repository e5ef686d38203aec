"""``BoxTracker``: single-object box tracking with DETRack (Wei, Zeng & Zeng, arXiv:2309.02676).

This is the first public implementation; no official code or weights exist, so our checkpoint format
(``config.json`` + ``model.safetensors`` from :meth:`save_pretrained`) is the reference. Train weights with
``trackers-train box`` or initialise the encoder from an OSTrack / MAE / CAE checkpoint with
:meth:`BoxTracker.init_encoder`.

Quick start::

    import trackers
    tracker = trackers.BoxTracker.from_pretrained("path/to/trained")     # or from_config("detrack-vitb-256")
    result = tracker.track("video.mp4", init_box=(x1, y1, x2, y2))      # BoxTracks, xyxy in input pixels

Tracking (what the paper specifies, on the shared :class:`~trackers.box.tracker.SOTTracker` pipeline): a 128 px
template (factor 2) and a 256 px search region (factor 4), ImageNet normalisation; the final decoder layer's query
scores are scattered back to their 16x16 source cells, multiplied by a Hanning window (``window="multiply"``), and
the best cell's box is mapped back to the frame. ``decoder_layers`` runs fewer decoder layers than were trained
(the paper's Table 4 trades accuracy for speed that way).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union

from torch import Tensor

from trackers import registry
from trackers.box.pipeline import SOTSettings
from trackers.box.tracker import SOTTracker
from trackers.errors import InputError
from trackers.models.detrack import DETRack, DETRackConfig
from trackers.models.detrack.convert import ConversionReport, load_encoder_checkpoint

__all__ = ["BoxTracker", "DETRackSettings"]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class DETRackSettings(SOTSettings):
    """:class:`~trackers.box.pipeline.SOTSettings` with DETRack's defaults (OSTrack's multiplied Hanning window)
    plus ``decoder_layers``: decoder layers to run at inference (``None`` = all that were trained)."""

    window: str = "multiply"
    decoder_layers: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        v = self.decoder_layers
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InputError(f"DETRackSettings.decoder_layers must be None or an int >= 1, got {v!r}")


class BoxTracker(SOTTracker):
    """DETRack single-object tracker (registry name ``detrack-vitb-256``: architecture only, no released weights).

    ``to(dtype=torch.bfloat16)`` is mixed precision: the encoder's block matrices take that dtype while the
    candidate-elimination scores and the decoder head stay float32.
    """

    config_class = DETRackConfig
    model_class = DETRack
    settings_class = DETRackSettings

    def _check_decoder_layers(self) -> Optional[int]:
        n = self.settings.decoder_layers
        if n is not None and n > self.config.num_decoder_layers:
            raise InputError(f"decoder_layers={n} but the network has {self.config.num_decoder_layers} "
                             "decoder layers")
        return n

    # ------------------------------------------------------------------------------------------ hooks
    def _encode_template(self, crops: Tensor, masks: Tensor) -> Tensor:
        # Candidate elimination ranks search tokens by the template's centre token, not by a box mask; the mask
        # only marks the target's tokens in networks built with template token types.
        return self.model.embed_template(crops, masks if self.config.template_token_types else None)

    def _predict(self, templates: Tensor, search: Tensor) -> Tuple[Tensor, Tensor]:
        # The decoder reads search tokens only: the last encoder block skips the template rows' outputs.
        out = self.model.forward_tokens(templates, search, num_decoder_layers=self._check_decoder_layers(),
                                        template_outputs=False)
        return DETRack.score_map(out)

    # ------------------------------------------------------------------------------------------ weights
    def init_encoder(self, checkpoint: Union[PathLike, Mapping[str, Any]]) -> ConversionReport:
        """Initialise the ViT encoder from an OSTrack, MAE or CAE checkpoint (file or state dict).

        Position grids are resized to the crop sizes; the report lists what was loaded, converted and left at
        its initial value (print it). The decoder head keeps its weights.
        """
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = registry.load_checkpoint_file(checkpoint)
        return load_encoder_checkpoint(self.model, checkpoint)
