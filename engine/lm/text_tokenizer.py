"""The text side of a TTS model's vocabulary: which tokenizer and id layout a checkpoint uses.

    tok, layout = load_tokenizer("Step-Audio-TTS-3B/")   # tokenizer.model -> SentencePiece
    tok, layout = load_tokenizer("student/")             # no tokenizer.model -> ByteTokenizer

A real Step-Audio dir carries a SentencePiece ``tokenizer.model`` and uses the full Step-Audio
layout (text ids below 65536, audio ids from 65536); the project's students use
:class:`engine.prompts.ByteTokenizer` with the compact layout their ``config.json`` names.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from engine.errors import MissingPackage
from engine.prompts import BOS, BOT, EOS, EOT, ByteTokenizer
from engine.tokens import STEP_AUDIO, TokenLayout
from manifests.errors import UserError


class SentencePieceTokenizer:
    """A SentencePiece model as a :class:`engine.prompts.TextTokenizer`.

    The special ids are the pieces ``<|BOT|>`` / ``<|EOT|>`` (and the model's own bos/eos) when
    the model has them, else the Step tokenizer's fixed ids (bos 1, eos 2, EOT 3, BOT 4).
    """

    def __init__(self, path: str | Path):
        try:
            import sentencepiece as spm
        except ImportError:
            raise MissingPackage("a tokenizer.model needs sentencepiece: pip install sentencepiece") from None
        self.path = Path(path)
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        self.bos = self._special(None, self.sp.bos_id(), BOS)
        self.eos = self._special(None, self.sp.eos_id(), EOS)
        self.eot = self._special("<|EOT|>", -1, EOT)
        self.bot = self._special("<|BOT|>", -1, BOT)

    def _special(self, piece: str | None, own: int, default: int) -> int:
        if piece is not None:
            i = self.sp.piece_to_id(piece)
            if i != self.sp.unk_id() and self.sp.id_to_piece(i) == piece:
                return i
        return own if own >= 0 else default

    @property
    def text_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text, out_type=int))

    def decode(self, ids: Sequence[int]) -> str:
        n = self.text_size
        return self.sp.decode([int(i) for i in ids if 0 <= i < n])


def config_layout(config: dict) -> TokenLayout:
    """The audio id layout of a ``config.json`` dict (``engine.models.token_layout``)."""
    from engine.models import token_layout

    return token_layout(SimpleNamespace(token_layout=config.get("token_layout"),
                                        vocab_size=int(config["vocab_size"])))


def load_tokenizer(model_dir: str | Path | None, config: dict | None = None):
    """(tokenizer, layout) for a checkpoint dir; ``model_dir`` None means the compact
    ByteTokenizer layout (e.g. a server whose files are not here).

    Raises:
        UserError: a layout whose text part no tokenizer here can fill.
    """
    model_dir = Path(model_dir) if model_dir is not None else None
    layout = config_layout(config) if config else None
    if model_dir is not None and (model_dir / "tokenizer.model").is_file():
        tok = SentencePieceTokenizer(model_dir / "tokenizer.model")
        if layout is None:
            layout = STEP_AUDIO
        top = max(tok.bos, tok.eot, tok.bot)
        if top >= layout.vq02_offset:
            raise UserError(f"{model_dir}/tokenizer.model has special id {top} inside the audio "
                             f"ids of layout {layout}")
        return tok, layout
    tok = ByteTokenizer()
    layout = layout or tok.layout()
    if layout.text_size != tok.text_size:
        raise UserError(f"{model_dir} has a {layout.text_size}-id text vocabulary but no "
                         f"tokenizer.model; only {tok.text_size}-id byte-level students work without one")
    return tok, layout
