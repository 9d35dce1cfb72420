"""The LSTM language model of region captioning (Karpathy & Fei-Fei, "Deep Visual-Semantic
Alignments for Generating Image Descriptions", CVPR 2015; Johnson, Karpathy & Fei-Fei,
"DenseCap", CVPR 2016), as DenseCap's LanguageModel.lua, with static shapes.

Token conventions (jaxseg.data.vocab): PAD = 0, START = 1, END = 2, UNK = 3; a caption
is `tokens` int32 [T] = word ids, END, then PAD (T = max_length + 1).

Inputs of the one-layer LSTM (DenseCap's default `num_layers` 1), step by step: the
region code [D] projected to embed_dim (Linear + ReLU, LanguageModel.lua's
`image_encoder`), then the embedding of START, then the embeddings of tokens[0..T-2]
(teacher forcing). The output after input k + 1 gives the logits over the whole
vocabulary that predict tokens[k]: `__call__` -> logits [R, T, V] with logits[:, t]
depending on the code and tokens[:, :t] only.

`code_every_step` (a jaxseg option; False, the default: the paper's init-inject): the
projected code also enters every later step, as a per-row bias of the LSTM's gates
(`code_gates` [embed_dim, 4 H] of the projected code; Tanti et al., "Where to put the
image in an image caption generator", 2018: par-inject), so words late in a caption (a
relation clause's object) need not be carried in the LSTM state from the first step.

Decoding (`greedy`, `beam_search`) runs a fixed T steps (lax.scan): PAD and START are
never emitted (their logits are masked out; the reported log-probabilities are still
the full softmax's, so they equal `log_likelihood` of the decoded tokens); the last step
(t = T - 1) may only emit END, so every decoded caption has the data's form (at most
max_length words, END, PAD). After END a row emits PAD at no cost (its score is frozen).
Beam search keeps `beam_size` hypotheses per region, a finished one propagates as a
single candidate (PAD, unchanged score), and returns the best by summed log-probability
(no length normalisation, as DenseCap's beamsearch). beam_size = 1 is exactly greedy.

`loss` is DenseCap's TemporalCrossEntropyCriterion: softmax cross-entropy summed over
every non-PAD target position (the words and the END) and divided by the number of those
tokens: here sum_r w_r * (sum of the row's token losses) / max(sum_r w_r * n_r, 1),
n_r = the row's non-PAD tokens, w_r = `weights` (e.g. 1 for the sampled positives, 0 for
padding rows): an average over tokens, not over captions, so long captions weigh more.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PAD, START, END, UNK = 0, 1, 2, 3
_NEG = -1e9  # a finite "minus infinity" for masked candidates (no inf - inf NaNs)


def caption_mask(tokens):
  """[..., T] bool: the positions up to and including the first END that are not PAD."""
  is_end = tokens == END
  ended_before = (jnp.cumsum(is_end, axis=-1) - is_end) > 0
  return (tokens != PAD) & ~ended_before


def caption_loss(logits, tokens, weights):
  """LanguageModel.loss from its teacher-forced logits [R, T, V]: softmax CE summed over
  the non-PAD target positions of each row, weighted by `weights` [R], divided by
  max(sum_r weights_r * n_r, 1) (n_r: the row's non-PAD tokens) -> scalar float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, tokens.astype(jnp.int32)[..., None], -1)[..., 0]
  mask = (tokens != PAD).astype(jnp.float32)
  w = weights.astype(jnp.float32)
  total = jnp.sum(w[:, None] * mask * nll)
  return total / jnp.maximum(jnp.sum(w * jnp.sum(mask, -1)), 1.0)


def token_accuracy(logits, tokens, weights):
  """The fraction of non-PAD target positions (rows weighted by `weights` [R]) whose
  argmax logit is the target token (teacher forced)."""
  mask = (tokens != PAD).astype(jnp.float32) * weights.astype(jnp.float32)[:, None]
  hit = (jnp.argmax(logits, -1) == tokens).astype(jnp.float32)
  return jnp.sum(mask * hit) / jnp.maximum(jnp.sum(mask), 1.0)


class LanguageModel(nn.Module):
  """One-layer LSTM captioner conditioned on a region code (see the module docstring).

  Parameters: `image_encoder` (Dense D -> embed_dim), `embedding` [V, embed_dim],
  `lstm_input` [embed_dim, 4 H], `lstm_hidden` [H, 4 H], `lstm_bias` [4 H] (gates i, f,
  g, o), `output_kernel` [H, V] and `output_bias` [V] (raw parameters, so the decoders
  can read them inside lax.scan)."""
  vocab_size: int
  embed_dim: int = 512
  hidden_dim: int = 512
  max_length: int = 15  # words; T = max_length + 1
  code_every_step: bool = False  # par-inject: the code biases the gates at every step
  dtype: Any = jnp.float32

  def setup(self):
    if self.vocab_size < 4:
      raise ValueError(f"vocab_size={self.vocab_size}; expected >= 4 (PAD, START, END, UNK "
                       "and the words)")
    h = self.hidden_dim
    self.image_encoder = nn.Dense(self.embed_dim, dtype=self.dtype, name="image_encoder")
    self.embedding = self.param("embedding", nn.initializers.normal(1.0),
                                (self.vocab_size, self.embed_dim))
    self.lstm_input = self.param("lstm_input", nn.initializers.lecun_normal(),
                                 (self.embed_dim, 4 * h))
    self.lstm_hidden = self.param("lstm_hidden", nn.initializers.orthogonal(), (h, 4 * h))
    self.lstm_bias = self.param("lstm_bias", nn.initializers.zeros, (4 * h,))
    self.output_kernel = self.param("output_kernel", nn.initializers.lecun_normal(),
                                    (h, self.vocab_size))
    self.output_bias = self.param("output_bias", nn.initializers.zeros, (self.vocab_size,))
    if self.code_every_step:
      self.code_gates = self.param("code_gates", nn.initializers.lecun_normal(),
                                   (self.embed_dim, 4 * h))

  @property
  def length(self) -> int:
    """T: the token positions of a caption (max_length words + END)."""
    return self.max_length + 1

  # -- pieces --------------------------------------------------------------------------
  def _weights(self, x0=None):
    """(input kernel, hidden kernel, gate bias): the bias [4 H], or with code_every_step
    and the projected codes x0 [N, E] given, per row [N, 4 H]."""
    bias = self.lstm_bias.astype(self.dtype)
    if self.code_every_step and x0 is not None:
      bias = bias + x0 @ self.code_gates.astype(self.dtype)
    return self.lstm_input.astype(self.dtype), self.lstm_hidden.astype(self.dtype), bias

  def _cell(self, weights, carry, x):
    """One LSTM step: carry (c, h) [N, H], input x [N, E] -> new carry."""
    wi, wh, b = weights
    c, h = carry
    z = x.astype(self.dtype) @ wi + h @ wh + b
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
    return c, nn.sigmoid(o) * jnp.tanh(c)

  def _embed(self, tokens):
    return jnp.take(self.embedding.astype(self.dtype), tokens, axis=0)

  def _logits(self, h):
    logits = h @ self.output_kernel.astype(self.dtype) + self.output_bias.astype(self.dtype)
    return logits.astype(jnp.float32)

  def _start(self, codes):
    """(the LSTM carry (c, h) after the code step and the START step, the weights of the
    later steps: `_weights` of the projected codes)."""
    n = codes.shape[0]
    zero = jnp.zeros((n, self.hidden_dim), self.dtype)
    x0 = nn.relu(self.image_encoder(codes.astype(self.dtype)))
    carry = self._cell(self._weights(), (zero, zero), x0)
    weights = self._weights(x0)
    carry = self._cell(weights, carry, self._embed(jnp.full((n,), START, jnp.int32)))
    return carry, weights

  def _allowed(self, t):
    """[V] additive mask of the tokens step t may emit: never PAD / START; only END at
    the last step."""
    ids = jnp.arange(self.vocab_size)
    ok = (ids != PAD) & (ids != START)
    ok &= (t < self.length - 1) | (ids == END)
    return jnp.where(ok, 0.0, _NEG)

  # -- teacher forcing -----------------------------------------------------------------
  def __call__(self, codes, tokens):
    """codes [R, D], tokens [R, T] -> logits [R, T, V] (float32); logits[:, t] predicts
    tokens[:, t] from the code and tokens[:, :t]."""
    tokens = tokens.astype(jnp.int32)
    carry, weights = self._start(codes)
    inputs = jnp.swapaxes(self._embed(tokens[:, :-1]), 0, 1)  # [T - 1, R, E]

    def step(carry, x):
      carry = self._cell(weights, carry, x)
      return carry, carry[1]

    _, hs = jax.lax.scan(step, carry, inputs)
    hs = jnp.concatenate([carry[1][None], hs], 0)  # [T, R, H]
    return jnp.swapaxes(self._logits(hs), 0, 1)

  def token_nll(self, codes, tokens):
    """-log p(tokens[:, t] | ...) [R, T] float32 (every position, PAD ones included)."""
    logits = self(codes, tokens)
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.take_along_axis(logp, tokens.astype(jnp.int32)[..., None], -1)[..., 0]

  def loss(self, codes, tokens, weights):
    """Token-averaged softmax CE (module docstring, `caption_loss`): scalar float32."""
    return caption_loss(self(codes, tokens), tokens, weights)

  def log_likelihood(self, codes, tokens):
    """[R] float32: the sum of log p of the tokens up to and including the first END."""
    nll = self.token_nll(codes, tokens)
    return -jnp.sum(jnp.where(caption_mask(tokens), nll, 0.0), -1)

  # -- decoding ------------------------------------------------------------------------
  def greedy(self, codes):
    """Argmax decoding -> (tokens [R, T] int32, logprob [R] float32)."""
    carry, weights = self._start(codes)
    n = codes.shape[0]

    def step(state, t):
      carry, done, score = state
      logp = jax.nn.log_softmax(self._logits(carry[1]), -1)
      word = jnp.argmax(logp + self._allowed(t), -1).astype(jnp.int32)
      word = jnp.where(done, PAD, word)
      score = score + jnp.where(done, 0.0, jnp.take_along_axis(logp, word[:, None], -1)[:, 0])
      carry = self._cell(weights, carry, self._embed(word))
      return (carry, done | (word == END), score), word

    init = (carry, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32))
    (_, _, score), words = jax.lax.scan(step, init, jnp.arange(self.length))
    return jnp.swapaxes(words, 0, 1), score

  def beam_search(self, codes, beam_size: int = 3):
    """Beam search of `beam_size` beams (static) -> (tokens [R, T] int32, logprob [R])
    of the best beam per region (module docstring)."""
    k = int(beam_size)
    if k < 1:
      raise ValueError(f"beam_size={beam_size}; expected >= 1")
    n, v, t_len = codes.shape[0], self.vocab_size, self.length
    (c, h), (wi, wh, bias) = self._start(codes)
    weights = (wi, wh, jnp.repeat(bias, k, 0) if bias.ndim == 2 else bias)  # rows n * k
    tile = lambda x: jnp.repeat(x[:, None], k, 1)  # [R, ...] -> [R, K, ...]
    carry = (tile(c), tile(h))
    scores = jnp.where(jnp.arange(k) == 0, 0.0, _NEG)[None].repeat(n, 0)  # one live beam
    done = jnp.zeros((n, k), bool)
    words = jnp.zeros((n, k, t_len), jnp.int32)
    pad_only = jnp.where(jnp.arange(v) == PAD, 0.0, _NEG)

    def step(state, t):
      carry, scores, done, words = state
      logp = jax.nn.log_softmax(self._logits(carry[1]), -1)  # [R, K, V]
      live = scores[..., None] + logp + self._allowed(t)
      frozen = scores[..., None] + pad_only
      cand = jnp.where(done[..., None], frozen, live).reshape(n, k * v)
      top, flat = jax.lax.top_k(cand, k)
      parent, word = flat // v, (flat % v).astype(jnp.int32)
      pick = lambda x: jnp.take_along_axis(x, parent.reshape(parent.shape + (1,) * (x.ndim - 2)),
                                           1)
      carry = (pick(carry[0]), pick(carry[1]))
      done, words = pick(done), pick(words)
      words = words.at[:, :, t].set(word)
      done = done | (word == END)
      x = self._embed(word).reshape(n * k, -1)
      carry = self._cell(weights, (carry[0].reshape(n * k, -1), carry[1].reshape(n * k, -1)), x)
      carry = (carry[0].reshape(n, k, -1), carry[1].reshape(n, k, -1))
      return (carry, top, done, words), None

    (_, scores, _, words), _ = jax.lax.scan(step, (carry, scores, done, words),
                                            jnp.arange(t_len))
    return words[:, 0], scores[:, 0]  # top_k sorts: beam 0 is the best


__all__ = ["END", "LanguageModel", "PAD", "START", "UNK", "caption_loss", "caption_mask",
           "token_accuracy"]
