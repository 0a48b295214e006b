"""LAC's network: char embedding -> 2 stacked BiGRU -> linear -> CRF, optionally with a frozen-biLM ELMo mix.

Why our own CRF: paddlenlp 2.8.1's `LinearChainCrf` is wrong under paddle 3.3.1 (and in its own code):
its `forward` (log-partition) indexes `transitions[next, prev]` while `gold_score` and `ViterbiDecoder`
use `transitions[prev, next]`, and with `with_start_stop_tag=True` the gold score drops the final
->STOP transition.  So `LinearChainCrfLoss` is not a negative log-likelihood; it hides negative values
with a relu (zero gradient).  Checked against brute-force enumeration (tests/test_lac_model.py does the
same for this CRF).  Its Viterbi without start/stop tags is correct, but ours is in numpy for speed.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import paddle
import paddle.nn as nn

from elmo_paddle.recurrent import bidirectional_rnn, run_padded


class ElmoLike(Protocol):
    """The part of `elmo_paddle.elmo.Elmo` the tagger uses (a fake with this shape is used in tests)."""

    output_dim: int

    def __call__(self, ids: paddle.Tensor) -> dict[str, Any]: ...
    def batch_to_ids(self, tokens: list[list[str]]) -> paddle.Tensor: ...
    def l2_penalty(self) -> paddle.Tensor: ...


class CRF(nn.Layer):
    """Linear-chain CRF with start/end scores; `transitions[i, j]` scores tag i followed by tag j."""

    def __init__(self, num_tags: int, lr: float = 1.0) -> None:
        super().__init__()
        self.num_tags = num_tags
        init = nn.initializer.Uniform(-0.1, 0.1)
        attr = lambda: paddle.ParamAttr(learning_rate=lr, initializer=init)  # noqa: E731
        self.transitions = self.create_parameter([num_tags, num_tags], attr=attr())
        self.start = self.create_parameter([num_tags], attr=attr())
        self.end = self.create_parameter([num_tags], attr=attr())

    def log_partition(self, emissions: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        """log Z per sequence; emissions [B,T,N], mask [B,T] (a prefix of ones, length >= 1)."""
        maskf = mask.astype(emissions.dtype)
        alpha = self.start.unsqueeze(0) + emissions[:, 0]
        # logsumexp_i(alpha_i + trans_ij) as a matmul in exp space, shifted by the maxima for stability:
        # 5x faster on CPU than a [B,N,N] logsumexp per step, and the loop over T is the hot path.
        tmax = self.transitions.max()
        exp_trans = paddle.exp(self.transitions - tmax)
        for t in range(1, emissions.shape[1]):
            amax = alpha.max(axis=1, keepdim=True)
            summed = paddle.matmul(paddle.exp(alpha - amax), exp_trans)
            nxt = paddle.log(paddle.clip(summed, min=1e-30)) + amax + tmax + emissions[:, t]
            m = maskf[:, t:t + 1]
            alpha = m * nxt + (1 - m) * alpha  # finished sequences keep their alpha
        return paddle.logsumexp(alpha + self.end.unsqueeze(0), axis=1)

    def score(self, emissions: paddle.Tensor, tags: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        """Unnormalised score of the tag sequences `tags` [B,T]."""
        maskf = mask.astype(emissions.dtype)
        n = self.num_tags
        emit = paddle.take_along_axis(emissions, tags.unsqueeze(-1), axis=2).squeeze(-1)
        s = (emit * maskf).sum(1)
        if tags.shape[1] > 1:
            pair = tags[:, :-1] * n + tags[:, 1:]
            s += (paddle.gather(self.transitions.flatten(), pair.flatten()).reshape(pair.shape)
                  * maskf[:, 1:]).sum(1)
        lengths = mask.astype("int64").sum(1)
        last = paddle.take_along_axis(tags, (lengths - 1).unsqueeze(1), axis=1).squeeze(1)
        return s + paddle.gather(self.start, tags[:, 0]) + paddle.gather(self.end, last)

    def nll_reference(self, emissions: paddle.Tensor, tags: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        """Negative log-likelihood per sequence [B], by autograd through the forward algorithm (any device)."""
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    def nll(self, emissions: paddle.Tensor, tags: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        """Negative log-likelihood per sequence [B]; on CPU the numpy forward-backward kernel with its
        closed-form gradient (`tasks/lac/crf_kernel.py`: forward + backward 12x faster), elsewhere the reference."""
        if not emissions.place.is_cpu_place():
            return self.nll_reference(emissions, tags, mask)
        from .crf_kernel import CrfNll

        lengths = mask.astype("int64").sum(1)
        return CrfNll.apply(emissions, self.transitions, self.start, self.end, tags, lengths)

    def viterbi(self, emissions: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
        """Best tag ids per sequence (numpy: per-step paddle ops cost more than the math here).

        The forward pass keeps only the best scores (a max over `[B, N, N]` per step, no argmax); the
        backtrace recomputes each step's argmax for the one tag chosen after it, `[B, N]` per step.
        Measured 0.139 -> 0.111 s for 50 sentences x 120 characters x 82 tags against per-step argmax
        back-pointers; seventh session: each step runs only the rows still inside their text, and the max over
        predecessors is `best_after`'s (exact, mostly from each row's best few).
        Ties resolve as before (the first best predecessor).
        """
        trans = self.transitions.numpy()
        start, end = self.start.numpy(), self.end.numpy()
        b, t_max, n = emissions.shape
        order = np.argsort(-lengths, kind="stable")  # longest first: step t runs the first active[t] rows only
        emissions, lengths = emissions[order], lengths[order]
        active = (lengths[None, :] > np.arange(t_max)[:, None]).sum(1)
        scores = np.empty((t_max, b, n), dtype=emissions.dtype)
        scores[0] = start[None] + emissions[:, 0]
        cand = np.empty((n, b, n), dtype=emissions.dtype)
        col_max = trans.max(0)
        for t in range(1, t_max):
            k = active[t]
            scores[t, :k] = best_after(scores[t - 1, :k], trans, col_max, cand[:, :k])
            scores[t, :k] += emissions[:k, t]
            scores[t, k:] = scores[t - 1, k:]  # finished rows keep their last scores
        rows = np.arange(b)
        cur = (scores[lengths - 1, rows] + end[None]).argmax(1)
        path = np.zeros((b, t_max), dtype=np.int64)
        path[rows, lengths - 1] = cur
        for t in range(t_max - 1, 0, -1):
            live = t < lengths  # sequences with a step t: choose its predecessor at t - 1
            cur = np.where(live, (scores[t - 1] + trans[:, cur].T).argmax(1), cur)
            path[:, t - 1] = np.where(live, cur, path[:, t - 1])
        paths = [None] * b
        for i, row in enumerate(order):
            paths[row] = path[i, :lengths[i]].tolist()
        return paths


def best_after(prev: np.ndarray, trans: np.ndarray, col_max: np.ndarray, cand: np.ndarray,
               top: int = 8) -> np.ndarray:
    """`max_i prev[:, i] + trans[i, :]`, `[k, N]`, exactly, mostly from each row's `top` best predecessors.

    Why: the full max reads `[N, k, N]` per step (82 tags: 219 us at k = 50) and was a third of the tagger's
    time.  A predecessor outside a row's top ones scores at most `prev_(top+1) + max_i trans[i, j]` (`col_max`);
    where the top ones' best reaches that bound for every j the row is exact, and other rows (flat scores)
    take the full max into `cand` (`[N, >= k, N]`).  Only the values are computed: the Viterbi's backtrace
    picks the predecessor itself, so paths and ties are those of the full max.
    """
    k, n = prev.shape
    if n <= 2 * top:
        np.add(prev.T[:, :, None], trans[:, None, :], out=cand[:, :k])
        return cand[:, :k].max(0)
    part = np.argpartition(prev, n - top - 1, axis=1)
    best_i = part[:, n - top:]  # [k, top]
    rest = np.take_along_axis(prev, part[:, n - top - 1:n - top], 1)  # the best score outside the top ones
    best = (np.take_along_axis(prev, best_i, 1)[:, :, None] + trans[best_i]).max(1)
    loose = np.flatnonzero((best < rest + col_max[None]).any(1))
    if loose.size:
        sub = cand[:, :loose.size]
        np.add(prev[loose].T[:, :, None], trans[:, None, :], out=sub)
        best[loose] = sub.max(0)
    return best


class LacTagger(nn.Layer):
    """Char embedding (+ ELMo mix) -> stacked BiGRU (+ ELMo mix) -> linear -> CRF."""

    def __init__(self, vocab_size: int, num_tags: int, *, emb_dim: int = 128, hidden_dim: int = 128,
                 num_layers: int = 2, dropout: float = 0.0, crf_lr: float = 1.0,
                 elmo: ElmoLike | None = None, elmo_at_output: bool = False) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.elmo = elmo
        self.elmo_at_output = bool(elmo is not None and elmo_at_output)
        elmo_dim = elmo.output_dim if elmo is not None else 0
        self.gru = bidirectional_rnn("gru", emb_dim + elmo_dim, hidden_dim, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden_dim + (elmo_dim if self.elmo_at_output else 0), num_tags)
        self.crf = CRF(num_tags, lr=crf_lr)

    def emissions(self, char_ids: paddle.Tensor, lengths: paddle.Tensor,
                  elmo_ids: paddle.Tensor | None = None) -> paddle.Tensor:
        """Per-character tag scores [B,T,num_tags] (`elmo_ids`: see `elmo_reps`)."""
        x = self.embedding(char_ids)
        reps = self.elmo_reps(elmo_ids, char_ids)
        if reps:
            x = paddle.concat([x, reps[0]], axis=-1)
        x = self.dropout(x)
        h = run_padded(self.gru, x, lengths)
        if self.elmo_at_output:
            h = paddle.concat([h, reps[-1]], axis=-1)
        return self.fc(self.dropout(h))

    def elmo_reps(self, elmo_ids: paddle.Tensor | None, char_ids: paddle.Tensor) -> list[paddle.Tensor]:
        """The ELMo mixes `[B, T, elmo_dim]` (none without ELMo): of `elmo.batch_to_ids(...)` (int `[B, T]`) or
        of cached frozen biLM layers (float `[B, 3, T, D]`, see `elmo_paddle.layer_cache`), which are only mixed."""
        if self.elmo is None:
            return []
        if elmo_ids is None:
            raise ValueError("this tagger has ELMo: pass elmo_ids (elmo.batch_to_ids of the characters)")
        if elmo_ids.ndim == 4:
            reps = self.elmo.mix_layers(elmo_ids, char_ids != 0)["elmo_representations"]
        else:
            reps = self.elmo(elmo_ids)["elmo_representations"]
        return [r[:, :char_ids.shape[1]] for r in reps]  # in case batch_to_ids pads differently

    def loss(self, char_ids: paddle.Tensor, lengths: paddle.Tensor, tag_ids: paddle.Tensor,
             elmo_ids: paddle.Tensor | None = None) -> paddle.Tensor:
        """Mean CRF negative log-likelihood (+ the ELMo scalar-mix L2 penalty)."""
        em = self.emissions(char_ids, lengths, elmo_ids)
        loss = self.crf.nll(em, tag_ids, char_ids != 0).mean()
        if self.elmo is not None:
            loss = loss + self.elmo.l2_penalty()
        return loss

    @paddle.no_grad()
    def decode(self, char_ids: paddle.Tensor, lengths: paddle.Tensor, elmo_ids: paddle.Tensor | None = None,
               frozen: "FrozenEmissions | None" = None) -> list[list[int]]:
        """Best tag ids per sequence; `frozen` (built once from these weights) computes the emissions faster on CPU."""
        if frozen is not None:
            em = frozen(char_ids, lengths, elmo_ids)
        else:
            em = self.emissions(char_ids, lengths, elmo_ids).numpy()
        return self.crf.viterbi(em, lengths.numpy())

    def trainable_state(self) -> dict[str, paddle.Tensor]:
        """Weights to save: everything but the frozen biLM (it is reloaded from the ELMo model dir)."""
        frozen = {id(p) for p in self.parameters() if p.stop_gradient}
        elmo_params = {id(p) for p in (self.elmo.parameters() if isinstance(self.elmo, nn.Layer) else [])}
        out = {}
        for k, v in self.state_dict().items():
            if k.startswith("elmo.") and (id(v) in frozen or id(v) not in elmo_params):
                continue  # frozen biLM params and buffers
            out[k] = v
        return out


class FrozenEmissions:
    """`LacTagger.emissions` in eval mode, in numpy on CPU (`elmo_paddle.gru_cpu.BiGru`): the predict path.

    Its weights are those of `model` when built: build one per set of weights (`Tagger` once; dev scoring once per
    evaluation, which costs a `[V, 128] @ [128, 768]` product), with `model` in eval mode.  On the 1,949 PD1998 test paragraphs the baseline tagger's GRU took 3.0-3.3 s in paddle against
    2.6-2.9 s here in float32 and 2.0 s with `ELMO_PADDLE_BF16=1` (one core, seventh session; since the
    fourteenth, packed states and numpy's BLAS: the whole tagger 3.1 s, Viterbi included); the results
    match `emissions` to float rounding (tests/test_gru_cpu.py).
    """

    def __init__(self, model: LacTagger) -> None:
        from elmo_paddle.gru_cpu import BiGru

        self.model = model
        self.gru = BiGru(model.gru, model.embedding.weight.numpy())
        self.fc_w, self.fc_b = model.fc.weight.numpy(), model.fc.bias.numpy()

    @staticmethod
    def available() -> bool:
        from elmo_paddle.gru_cpu import available

        return paddle.get_device() == "cpu" and available()

    def __call__(self, char_ids: paddle.Tensor, lengths: paddle.Tensor, elmo_ids: paddle.Tensor | None = None
                 ) -> np.ndarray:
        """`[B, T, num_tags]`; the output layer too runs on the real characters only (padding gets its bias)."""
        from elmo_paddle.gru_cpu import Packing

        reps = [r.numpy() for r in self.model.elmo_reps(elmo_ids, char_ids)]
        ids = char_ids.numpy()
        pack = Packing(lengths.numpy(), ids.shape[1])
        h = self.gru.packed(pack, ids=ids, x=reps[0] if reps else None)
        if self.model.elmo_at_output:
            h = np.concatenate([h, reps[-1][pack.rows, pack.steps]], axis=-1)
        em = np.empty(ids.shape + (len(self.fc_b),), dtype=np.float32)
        em[...] = self.fc_b
        em[pack.rows, pack.steps] = h @ self.fc_w + self.fc_b
        return em


def batch_tensors(char_ids: np.ndarray, lengths: np.ndarray, tag_ids: np.ndarray | None = None
                  ) -> tuple[paddle.Tensor, ...]:
    out = [paddle.to_tensor(char_ids, dtype="int64"), paddle.to_tensor(lengths, dtype="int64")]
    if tag_ids is not None:
        out.append(paddle.to_tensor(tag_ids, dtype="int64"))
    return tuple(out)


__all__ = ["CRF", "LacTagger", "ElmoLike", "FrozenEmissions", "batch_tensors"]
