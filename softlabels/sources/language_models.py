"""Built-in causal language models: ``[B, L]`` int64 token ids in, ``[B, L, V]`` next-token logits out.

Position ``t``'s logits see tokens ``0..t`` only, so padding at the end of a sequence (see
:func:`softlabels.sources.pad_collate`) never changes the logits of the positions before it.
"""

from __future__ import annotations

import torch
from torch import nn

from softlabels.errors import InvalidArgumentError

__all__ = ["MAX_POSITIONS", "CausalLSTM", "CausalTransformer"]

MAX_POSITIONS = 512
"""Longest sequence the Transformers' learned position table covers (independent of the data's
sequence length, so that weights trained on one length load for any other up to this)."""


class CausalTransformer(nn.Module):
    """Decoder-only Transformer: token + learned position embeddings, pre-norm blocks under a causal
    mask, a final LayerNorm and an output layer tied to the token embedding.

    Args:
        vocab_size: Number of token ids (input) and classes (output).
        d_model: Width of the embeddings and blocks.
        num_layers: Transformer blocks.
        num_heads: Attention heads per block.
        dropout: Dropout of embeddings, attention and feed-forward layers (off in eval mode).
        max_positions: Longest input accepted.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int,
        num_layers: int,
        num_heads: int,
        dropout: float = 0.1,
        max_positions: int = MAX_POSITIONS,
    ) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_positions, d_model)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=4 * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tokens.weight  # tying halves the parameters and helps small corpora
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.max_positions:
            raise InvalidArgumentError(
                f"sequences of {length} tokens exceed this model's {self.max_positions} positions"
            )
        places = torch.arange(length, device=tokens.device)
        hidden = self.dropout(self.tokens(tokens) + self.positions(places))
        mask = nn.Transformer.generate_square_subsequent_mask(
            length, device=tokens.device, dtype=hidden.dtype
        )
        hidden = self.blocks(hidden, mask=mask, is_causal=True)
        logits: torch.Tensor = self.head(self.norm(hidden))
        return logits


class CausalLSTM(nn.Module):
    """Word-level LSTM language model: embedding, stacked LSTM, output layer tied to the embedding.

    Args:
        vocab_size: Number of token ids (input) and classes (output).
        width: Embedding and hidden size.
        num_layers: Stacked LSTM layers.
        dropout: Dropout on embeddings, between layers and before the output (off in eval mode).
    """

    def __init__(self, vocab_size: int, *, width: int, num_layers: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            width, width, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.head = nn.Linear(width, vocab_size)
        self.head.weight = self.tokens.weight
        nn.init.uniform_(self.tokens.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.dropout(self.tokens(tokens)))
        logits: torch.Tensor = self.head(self.dropout(hidden))
        return logits
