"""BiDAF (Seo et al., 2017) for Chinese characters, with an optional frozen-ELMo input (and modeling) mix.

Layers, as published: (1) character-level and (2) word-level embeddings -- for Chinese every token is a
character, so (1) is a character embedding and (2) the embedding of the jieba word containing the character,
broadcast to each of its characters -- then 2 highway layers; (3) one contextual BiLSTM shared by context
and question; (4) attention flow: trilinear similarity S_tj = w^T[h_t; u_j; h_t*u_j], context-to-query and
query-to-context attention, G = [h; u~; h*u~; h*h~]; (5) a 2-layer modeling BiLSTM -> M; (6) start logits
from [G; M], a further BiLSTM over M -> M2, end logits from [G; M2].  Padding is masked in every softmax.

+ELMo: the ELMo mix is concatenated to the highway output (input of the contextual layer); with
`elmo_at_modeling` a second mix is concatenated to M (the modeling-layer output).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from elmo_paddle.recurrent import bidirectional_rnn, run_padded

NEG = -1e30  # masked logits: exp() underflows to exactly 0, while staying finite (no inf - inf = NaN)


@dataclass
class ModelSizes:
    """Shapes the network needs to be rebuilt (saved in the model folder's config)."""

    char_vocab: int
    word_vocab: int
    char_dim: int = 64
    word_dim: int = 64
    hidden: int = 64
    dropout: float = 0.2
    elmo_dim: int = 0            # 0: no ELMo
    elmo_at_modeling: bool = False


class Highway(nn.Layer):
    """y = g * relu(W x) + (1 - g) * x, with g = sigmoid(W_g x).

    The function of `elmo_paddle.bilm.Highway`, but not its parameters: that one fuses W and W_g into one
    [d, 2d] Linear (another Xavier range and random draw order) and starts the gate bias at +1; this one has
    two [d, d] Linears with zero biases.  Swapping them changes every BiDAF result (measured: even with this
    initialisation copied into the fused layer, the weights drift by ~1e-4 within 14 steps).
    """

    def __init__(self, dim: int, layers: int = 2):
        super().__init__()
        self.lin = nn.LayerList([nn.Linear(dim, dim) for _ in range(layers)])
        self.gate = nn.LayerList([nn.Linear(dim, dim) for _ in range(layers)])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for lin, gate in zip(self.lin, self.gate):
            g = F.sigmoid(gate(x))
            x = g * F.relu(lin(x)) + (1 - g) * x
        return x


class BiLSTM(nn.Layer):
    """Bidirectional LSTM over padded batches (lengths given), dropout on its input."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.rnn = bidirectional_rnn("lstm", in_dim, hidden, layers, dropout)

    def forward(self, x: paddle.Tensor, lens: paddle.Tensor) -> paddle.Tensor:
        return run_padded(self.rnn, self.drop(x), lens)


def masked_softmax(x: paddle.Tensor, mask: paddle.Tensor, axis: int) -> paddle.Tensor:
    """Softmax over `axis` with masked entries at exactly 0."""
    return F.softmax(paddle.where(mask, x, paddle.full_like(x, NEG)), axis=axis)


class AttentionFlow(nn.Layer):
    """Trilinear similarity + C2Q and Q2C attention -> G = [h; u~; h*u~; h*h~]."""

    def __init__(self, dim: int):
        super().__init__()
        self.w_h = nn.Linear(dim, 1, bias_attr=False)
        self.w_u = nn.Linear(dim, 1, bias_attr=False)
        self.w_hu = self.create_parameter([dim], default_initializer=nn.initializer.Uniform(-0.1, 0.1))
        self.bias = self.create_parameter([1], is_bias=True)

    def forward(self, h: paddle.Tensor, u: paddle.Tensor, c_mask: paddle.Tensor,
                q_mask: paddle.Tensor) -> paddle.Tensor:
        # S_tj = w_h.h_t + w_u.u_j + w_hu.(h_t * u_j), computed without materialising [B,T,J,3d]
        s = self.w_h(h) + self.w_u(u).transpose([0, 2, 1]) + paddle.matmul(h * self.w_hu, u, transpose_y=True)
        s = s + self.bias                                                  # [B,T,J]
        a = masked_softmax(s, q_mask.unsqueeze(1), axis=2)                # C2Q: attend over question
        u_tilde = paddle.matmul(a, u)                                      # [B,T,d]
        s_max = paddle.where(q_mask.unsqueeze(1), s, paddle.full_like(s, NEG)).max(axis=2)   # [B,T]
        b = masked_softmax(s_max, c_mask, axis=1)                          # Q2C: attend over context
        h_tilde = paddle.matmul(b.unsqueeze(1), h).expand_as(h)            # [B,T,d], tiled over T
        return paddle.concat([h, u_tilde, h * u_tilde, h * h_tilde], axis=-1)


class BiDAF(nn.Layer):
    """The full network; `forward(batch, c_layers, q_layers)` -> (start_logits, end_logits), both [B,T] masked.

    `c_layers`/`q_layers` are the cached frozen biLM layers of context and question (`ElmoLayerCache`,
    float [B, L, T, D]); required when the network has ELMo, else left out.
    """

    def __init__(self, sizes: ModelSizes, elmo: Any = None):
        super().__init__()
        self.sizes = sizes
        d = sizes.hidden
        self.char_emb = nn.Embedding(sizes.char_vocab, sizes.char_dim, padding_idx=0)
        self.word_emb = nn.Embedding(sizes.word_vocab, sizes.word_dim, padding_idx=0)
        emb = sizes.char_dim + sizes.word_dim
        self.highway = Highway(emb, 2)
        self.elmo = elmo  # frozen biLM + trainable scalar mixes, or None
        self.contextual = BiLSTM(emb + sizes.elmo_dim, d, 1, sizes.dropout)
        self.attention = AttentionFlow(2 * d)
        self.modeling = BiLSTM(8 * d, d, 2, sizes.dropout)
        m_dim = 2 * d + (sizes.elmo_dim if sizes.elmo_at_modeling else 0)
        self.end_lstm = BiLSTM(m_dim, d, 1, sizes.dropout)
        self.start_out = nn.Linear(8 * d + m_dim, 1)
        self.end_out = nn.Linear(8 * d + 2 * d, 1)
        self.drop = nn.Dropout(sizes.dropout)

    def _embed(self, chars: paddle.Tensor, words: paddle.Tensor) -> paddle.Tensor:
        x = paddle.concat([self.char_emb(chars), self.word_emb(words)], axis=-1)
        return self.highway(self.drop(x))

    def _elmo_mixes(self, layers: paddle.Tensor, mask: paddle.Tensor) -> list[paddle.Tensor]:
        reps = self.elmo.mix_layers(layers, mask)["elmo_representations"]
        T = mask.shape[1]
        return [r[:, :T] for r in reps]

    def forward(self, batch: dict[str, paddle.Tensor], c_layers: paddle.Tensor | None = None,
                q_layers: paddle.Tensor | None = None) -> tuple[paddle.Tensor, paddle.Tensor]:
        c_len, q_len = batch["c_len"], batch["q_len"]
        c_mask = batch["c_char"] != 0
        q_mask = batch["q_char"] != 0
        c = self._embed(batch["c_char"], batch["c_word"])
        q = self._embed(batch["q_char"], batch["q_word"])
        c_extra = None
        if self.sizes.elmo_dim:
            if c_layers is None or q_layers is None:
                raise ValueError("this BiDAF uses ELMo: pass the cached biLM layers for context and question")
            c_reps = self._elmo_mixes(c_layers, c_mask)
            q_reps = self._elmo_mixes(q_layers, q_mask)
            c = paddle.concat([c, c_reps[0]], axis=-1)
            q = paddle.concat([q, q_reps[0]], axis=-1)
            if self.sizes.elmo_at_modeling:
                c_extra = c_reps[1]
        h = self.contextual(c, c_len)
        u = self.contextual(q, q_len)
        g = self.attention(h, u, c_mask, q_mask)
        m = self.modeling(g, c_len)
        if c_extra is not None:
            m = paddle.concat([m, c_extra], axis=-1)
        start = self.start_out(self.drop(paddle.concat([g, m], axis=-1))).squeeze(-1)
        m2 = self.end_lstm(m, c_len)
        end = self.end_out(self.drop(paddle.concat([g, m2], axis=-1))).squeeze(-1)
        neg = paddle.full_like(start, NEG)
        return paddle.where(c_mask, start, neg), paddle.where(c_mask, end, neg)

    def loss(self, batch: dict[str, paddle.Tensor], c_layers: paddle.Tensor | None = None,
             q_layers: paddle.Tensor | None = None) -> paddle.Tensor:
        """Mean NLL of the gold start and end (cross_entropy: fast on CPU, unlike log_softmax)."""
        s, e = self(batch, c_layers, q_layers)
        loss = F.cross_entropy(s, batch["start"].unsqueeze(-1)) + F.cross_entropy(e, batch["end"].unsqueeze(-1))
        if self.elmo is not None and hasattr(self.elmo, "l2_penalty"):
            loss = loss + self.elmo.l2_penalty()
        return loss
