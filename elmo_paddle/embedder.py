"""Batch ELMo feature extraction: sentences -> frozen biLM layers `[3, T_i, D]` as numpy arrays.

    emb = ElmoEmbedder("models/elmo_small")
    vecs = emb.embed_sentences(["我爱北京", list("你好")])   # [np.ndarray [3, 4, D], np.ndarray [3, 2, D]]

* Sentences are strings (tokenised with the model's unit) or token lists; output i has one vector per token
  of sentence i, in order: `vecs[i][0]` the context-free token layer, `[1]`/`[2]` the LSTM layers.
* Batching by length: sentences are sorted by length and cut into batches of `batch_size`, so little time is
  spent on padding; results come back in input order.  A sentence's vectors do not depend on its batch.
* Long sentences are CHUNKED, not truncated: a sentence of more than `max_length` tokens is cut into
  consecutive pieces of at most `max_length` tokens, each embedded on its own (with its own `<S>`/`</S>`),
  and the pieces' vectors are concatenated, so every token still gets a vector.  Context does not cross
  a piece boundary.  A warning says how many sentences were chunked.  The default `max_length` of 256 is
  the longest span the pretraining dev evaluation scores in one piece.
* Empty strings give arrays with T = 0; an empty list gives an empty list; unknown characters map to
  `<UNK>` (the fraction is in `last_stats`).
* Speed: on a CPU build of paddle (which bundles MKL) everything after the token layer runs in numpy
  (`lstm_cpu.bilm_layers`: packed GEMMs, in-place element-wise work, with 2+ threads one LSTM direction per
  thread), 2.3x the paddle op-by-op loop (`bench/embed_packed.py`); `ELMO_PADDLE_PACKED_GEMM=0` turns it
  off.  `bench/embed.py` compares with ELMoForManyLangs (3.4-4.1x faster, RESULTS.md section 2).
* `token_cache`: an `.npz` file with the context-free token vectors of the whole vocab (layer 0), written on
  first use and checked against the model's weights checksum afterwards.  With the 'embedding' token layer
  this is a lookup table (useful as static character embeddings); it saves no time.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 256


class ElmoEmbedder:
    """Embeds sentences with a frozen biLM (eval mode, no dropout) into per-token numpy arrays.

    The numpy counterpart of `Elmo` for feature extraction: no scalar mix, no training; every biLM layer of
    every token comes back, in input order, one array per sentence (module docstring: batching, chunking,
    speed).

    Parameters
    ----------
    model_dir : str or os.PathLike
        A model directory, or a pretraining output directory (then its best/, else its final/).
    max_length : int, optional (default = 256)
        Longest piece, in tokens, embedded in one go.  A longer sentence is cut into consecutive pieces of
        at most `max_length` tokens, embedded separately (no context crosses a cut) and joined again, so
        every token still gets vectors.  Must be >= 1.
    threads : int, optional (default = None)
        Threads of paddle's CPU kernels (`runtime.set_threads`); None or 0 leaves paddle's setting alone.
    token_cache : str or os.PathLike, optional (default = None)
        An `.npz` file holding layer 0 (the context-free token vectors) of the whole vocab: written on first
        use, checked against the model's weights checksum afterwards.  Vocab tokens then take layer 0 from
        it; with a char-CNN model, out-of-vocab tokens are still spelled out by the model.
    verify : bool, optional (default = True)
        Check the model files against their manifest checksums when loading.

    Attributes
    ----------
    num_layers : int
        Layers per token: 1 + the biLM's LSTM layers (3 for a 2-layer biLM): the token layer, then each
        LSTM layer.
    output_dim : int
        Width of every layer: 2 * the biLM's projection size (forward and backward halves; the token layer
        is duplicated as [x; x]).
    vocab : Vocab
        The model's vocab; its `unit` ('char' or 'word') decides how strings are tokenised.
    last_stats : dict
        After each `embed_sentences` call: sentences, tokens, sentences chunked, and `oov_rate`, the share
        of tokens outside the vocab (they are read as `<UNK>`).

    Raises
    ------
    UserError
        For `max_length` < 1, a model directory that is missing or fails verification, or a token cache
        that is unreadable or made for another model.
    """

    def __init__(self, model_dir: str | os.PathLike, max_length: int = DEFAULT_MAX_LENGTH,
                 threads: int | None = None, token_cache: str | os.PathLike | None = None, verify: bool = True):
        from .elmo import Elmo
        from .runtime import set_threads

        if max_length < 1:
            raise UserError(f"max_length must be >= 1, got {max_length}")
        if threads:
            set_threads(threads)
        self.elmo = Elmo(model_dir, dropout=0.0, verify=verify)
        self.elmo.eval()
        self.max_length = max_length
        self.output_dim = self.elmo.output_dim
        self.num_layers = self.elmo.num_layers
        self.vocab = self.elmo.vocab
        self.last_stats: dict[str, float] = {}
        self.token_vectors = self._token_cache(Path(token_cache)) if token_cache else None

    # ------------------------------------------------------------ token cache
    def _token_cache(self, path: Path) -> np.ndarray:
        import paddle

        sha = self.elmo.weights_sha256
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    vecs = z["vectors"]
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"token cache {path} is not a valid cache file ({e})") from None
            if meta.get("weights_sha256") != sha or vecs.shape != (len(self.vocab), self.output_dim):
                raise UserError(f"token cache {path} was made for another model: delete it to rebuild it")
            return vecs
        with paddle.no_grad():
            ids = paddle.arange(len(self.vocab), dtype="int64").unsqueeze(0)
            tok = self.elmo.bilm.token_layer(ids)[0].numpy()
        vecs = np.concatenate([tok, tok], axis=-1).astype("float32")  # as the token layer: [x; x]
        meta = {"weights_sha256": sha, "unit": self.vocab.unit, "dim": self.output_dim}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, vectors=vecs, tokens=np.array(self.vocab.itos), meta=np.array(json.dumps(meta)))
            os.replace(tmp, path)
        except OSError as e:
            raise UserError(f"cannot write token cache {path}: {e.strerror or e}") from None
        return vecs

    # ------------------------------------------------------------ embedding
    def embed_sentences(self, sentences: Sequence[str] | Sequence[Sequence[str]], batch_size: int = 64,
                        progress: bool = False) -> list[np.ndarray]:
        """Embed many sentences, batched by length.

        Parameters
        ----------
        sentences : sequence of str, or sequence of sequences of str
            Strings are tokenised with the model's unit (for 'char': every non-space character is a
            token); token lists are used as given (width-normalised; a 'char' model needs one character
            per token).  Unknown tokens are read as `<UNK>`.
        batch_size : int, optional (default = 64)
            Pieces embedded together.  Sentences are sorted by length before batching, so little time goes
            to padding; a sentence's vectors do not depend on its batch (up to float rounding, ~1e-6).
        progress : bool, optional (default = False)
            Show a progress bar counting sentences.

        Returns
        -------
        list of np.ndarray
            One float32 array of shape (num_layers, T_i, output_dim) per sentence, in input order, where
            T_i is the number of tokens of sentence i.  Nothing is padded: ``array[:, t]`` belongs to token
            t (no `<S>`/`</S>` positions), so T_i is the sentence's length and arrays of one call differ in
            their second dimension.  An empty sentence gives T_i = 0; an empty input list, an empty list.
            ``array[0]`` is the context-free token layer, ``array[k]`` LSTM layer k.
        """
        from .elmo import sentences_to_token_lists

        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        token_lists = sentences_to_token_lists(sentences, self.vocab.unit)
        pieces = self._pieces(token_lists)
        results = self._embed_pieces(pieces, len(token_lists), batch_size, progress)
        out: list[list[np.ndarray]] = [[] for _ in token_lists]
        for k, (i, _) in enumerate(pieces):  # pieces are in sentence order, chunks in position order
            out[i].append(results[k])
        return [self._sentence_array(token_lists[i], parts) for i, parts in enumerate(out)]

    def _pieces(self, token_lists: list[list[str]]) -> list[tuple[int, list[str]]]:
        """(sentence index, tokens) of every piece of at most max_length tokens; sets `last_stats`."""
        pieces: list[tuple[int, list[str]]] = []
        chunked = 0
        for i, toks in enumerate(token_lists):
            if len(toks) > self.max_length:
                chunked += 1
            for s in range(0, len(toks), self.max_length):
                pieces.append((i, toks[s:s + self.max_length]))
        if chunked:
            log.warning("%d sentence(s) longer than max_length=%d tokens were split into chunks embedded "
                        "separately (no context across chunk boundaries)", chunked, self.max_length)
        n_tok = sum(len(t) for t in token_lists)
        n_unk = sum(1 for toks in token_lists for t in toks if t not in self.vocab)
        self.last_stats = {"sentences": len(token_lists), "tokens": n_tok, "chunked": chunked,
                           "oov_rate": n_unk / n_tok if n_tok else 0.0}
        return pieces

    def _embed_pieces(self, pieces: list[tuple[int, list[str]]], n_sentences: int, batch_size: int,
                      progress: bool) -> list[np.ndarray]:
        """`[num_layers, len(piece), output_dim]` of every piece, batched shortest first."""
        from tqdm import tqdm

        order = sorted(range(len(pieces)), key=lambda k: len(pieces[k][1]))
        results: list[np.ndarray | None] = [None] * len(pieces)
        bar = tqdm(total=n_sentences, desc="embed", unit="sent", disable=not progress, dynamic_ncols=True)
        left = [0] * n_sentences  # pieces still to embed, per sentence
        for i, _ in pieces:
            left[i] += 1
        bar.update(sum(1 for n in left if n == 0))  # empty sentences: nothing to compute
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            toks = [pieces[k][1] for k in idx]
            if max(len(t) for t in toks) == 0:
                for k in idx:
                    results[k] = np.zeros((self.num_layers, 0, self.output_dim), "float32")
            else:
                layers = self.elmo.encode_array(self.elmo.inputs_array(toks))
                for j, k in enumerate(idx):
                    results[k] = layers[j, :, :len(toks[j])]
            for k in idx:
                left[pieces[k][0]] -= 1
                bar.update(1 if left[pieces[k][0]] == 0 else 0)
        bar.close()
        return results  # type: ignore[return-value]

    def _sentence_array(self, tokens: list[str], parts: list[np.ndarray]) -> np.ndarray:
        """A sentence's pieces joined along time, layer 0 from the token cache when there is one."""
        if not parts:
            arr = np.zeros((self.num_layers, 0, self.output_dim), "float32")
        else:
            arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if self.token_vectors is not None and arr.shape[1]:
            arr = arr.copy()
            ids = np.asarray(self.vocab.encode(tokens))
            # a char-CNN spells out-of-vocab words itself: only vocab words come from the cache
            known = ids != self.vocab.unk_id if self.elmo.uses_chars else slice(None)
            arr[0][known] = self.token_vectors[ids[known]]
        return np.ascontiguousarray(arr, dtype="float32")

    def embed_sentence(self, sentence: str | Sequence[str]) -> np.ndarray:
        """Embed one sentence: `embed_sentences([sentence], batch_size=1)[0]`.

        Parameters
        ----------
        sentence : str or sequence of str
            A string (tokenised with the model's unit) or a token list.

        Returns
        -------
        np.ndarray
            float32, shape (num_layers, T, output_dim), T the sentence's number of tokens (no padding).
        """
        return self.embed_sentences([sentence], batch_size=1)[0]
