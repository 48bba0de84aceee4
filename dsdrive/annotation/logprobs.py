"""Cached teacher token log-probs for token-level KD: what an annotator wrote, token by token, with
the top-k log-probs of the distribution each token was drawn from.

An annotator that records log-probs (``dsdrive annotate --annotator hf-llm|openai --logprobs K``)
keeps, per annotated sample, a :class:`TokenLogprobs`: the generated token ids (L,), the log-prob
of each generated token (L,), the top-k token ids (L, k) and their log-probs (L, k), sorted by
log-prob, and the generated text. The student later learns exactly these token ids as its
reasoning target and matches its next-token distribution to the cached top-k at each position
(:mod:`dsdrive.training.token_kd`), with no teacher loaded during training (Hinton et al. 2015;
GKD, Agarwal et al. 2024).

Layout, beside the annotation shards of :mod:`dsdrive.annotation.store` (same rank and index)::

    logprobs-rank{R}-{NNNNN}.safetensors   one file per annotation shard that holds log-probs
        tensors: token_ids (N,) int32, token_logprobs (N,) float16, topk_ids (N, k) int32,
                 topk_logprobs (N, k) float16, offsets (S+1,) int64 (sample s owns rows
                 offsets[s]:offsets[s+1]), text_bytes (B,) uint8, text_offsets (S+1,) int64
        metadata (strings): format, teacher, tokenizer, tokenizer_fingerprint, top_k,
                 temperature, prompt_version, sample_ids (JSON list)

Log-probs are stored as float16 (about 3 significant digits; -inf where a position has fewer
than k candidates) and read back as float32. A shard is written before its annotation shard,
atomically and never over an existing file (:func:`dsdrive.annotation.store.write_file_exclusive`),
so a killed run leaves at most a log-prob shard without its annotation shard, which the next run
of that rank deletes (:func:`remove_orphan_logprob_shards`) and redoes. Records are read in the
annotation order (shard index, rank); the last record of a sample id wins.

The cache is loaded by path at distill time (``dsdrive distill --teacher_logprobs ANN_DIR``), not
merged into the dataset: ``dsdrive merge`` joins the JSON annotations only, and the student's
token-KD data joins the two by sample id (:class:`LogprobCache`).

Tokenizer fingerprint (:func:`tokenizer_fingerprint`): sha256 of the vocabulary (every token
string and its id, added tokens included) and of the set of tokens marked special. It decides
whether teacher and student token ids mean the same thing; special-token *roles* (which one is
eos or pad) are left out, since e.g. Qwen2.5 base and Instruct assign them differently over the
same vocabulary. The Qwen2.5-VL annotators and Qwen2.5 students share one fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CACHE_FORMAT = "dsdrive-token-logprobs/v1"
LOGPROB_SHARD_RE = re.compile(r"^logprobs-rank(\d+)-(\d{5,})\.safetensors$")
MAX_OPENAI_TOP_LOGPROBS = 20
"""The OpenAI chat-completions API returns at most 20 ``top_logprobs`` per token."""


def logprob_shard_name(rank: int, index: int) -> str:
    """``logprobs-rank{rank}-{index:05d}.safetensors`` (the twin of ``annotations-rank{rank}-{index:05d}.jsonl``)."""
    return f"logprobs-rank{rank}-{index:05d}.safetensors"


def tokenizer_fingerprint(tokenizer) -> str:
    """``sha256:<hex>`` of a tokenizer's vocabulary (string -> id, added tokens included) and of the
    set of its tokens marked special (see the module docstring for what it leaves out)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = sorted({str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
                     | {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False)})
    h = hashlib.sha256()
    h.update(json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    h.update(b"\0special\0")
    h.update(json.dumps(special, ensure_ascii=False).encode("utf-8"))
    return "sha256:" + h.hexdigest()


@dataclass
class TokenLogprobs:
    """One sample's generated tokens and the teacher's top-k log-probs at each of them.

    Attributes:
        token_ids: (L,) int32 generated token ids, in order (the eos included when the teacher
            stopped on it).
        token_logprobs: (L,) float32 log-prob of each generated token.
        topk_ids: (L, k) int32 the k most likely tokens at each position, most likely first.
        topk_logprobs: (L, k) float32 their log-probs (natural log, <= 0; -inf pads a position
            that had fewer than k candidates, its id is then 0).
        text: the generated text (what the annotation was parsed from).

    Raises:
        ValueError: shapes disagree, a log-prob is NaN or > 0, or an id is negative (the message
            names the field).
    """

    token_ids: np.ndarray
    token_logprobs: np.ndarray
    topk_ids: np.ndarray
    topk_logprobs: np.ndarray
    text: str = ""

    def __post_init__(self) -> None:
        self.token_ids = np.asarray(self.token_ids, np.int32).reshape(-1)
        self.token_logprobs = np.asarray(self.token_logprobs, np.float32).reshape(-1)
        self.topk_ids = np.asarray(self.topk_ids, np.int32)
        self.topk_logprobs = np.asarray(self.topk_logprobs, np.float32)
        n = len(self.token_ids)
        if self.topk_ids.ndim != 2 or self.topk_ids.shape[0] != n or self.topk_logprobs.shape != self.topk_ids.shape:
            raise ValueError(f"TokenLogprobs: token_ids {self.token_ids.shape}, topk_ids {self.topk_ids.shape} and "
                             f"topk_logprobs {self.topk_logprobs.shape} must be (L,), (L, k), (L, k)")
        if self.token_logprobs.shape != (n,):
            raise ValueError(f"TokenLogprobs: token_logprobs {self.token_logprobs.shape} must be ({n},)")
        for name in ("token_logprobs", "topk_logprobs"):
            v = getattr(self, name)
            if np.isnan(v).any() or (v > 1e-3).any():
                raise ValueError(f"TokenLogprobs: field {name!r} holds NaN or positive log-probs (max {np.nanmax(v) if v.size else 0})")
        if (self.token_ids < 0).any() or (self.topk_ids < 0).any():
            raise ValueError("TokenLogprobs: fields 'token_ids' / 'topk_ids' hold negative ids")

    @property
    def top_k(self) -> int:
        return int(self.topk_ids.shape[1])

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class LogprobsHeader:
    """What every record of one annotator run shares (stored as shard metadata).

    Attributes:
        teacher: the annotator id (``Annotation.teacher``), e.g. ``hf-llm:/models/x``.
        tokenizer: the tokenizer's name or path (for messages).
        tokenizer_fingerprint: :func:`tokenizer_fingerprint` of it.
        top_k: k, the candidates kept per position.
        temperature: temperature of the distribution the log-probs are of (1.0 = the model's
            own softmax; greedy decoding records 1.0).
        prompt_version: the annotator's prompt version.
    """

    teacher: str
    tokenizer: str
    tokenizer_fingerprint: str
    top_k: int
    temperature: float
    prompt_version: str

    def metadata(self) -> dict[str, str]:
        return {"format": CACHE_FORMAT, "teacher": self.teacher, "tokenizer": self.tokenizer,
                "tokenizer_fingerprint": self.tokenizer_fingerprint, "top_k": str(self.top_k),
                "temperature": repr(float(self.temperature)), "prompt_version": self.prompt_version}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], where: str) -> "LogprobsHeader":
        """Parse shard metadata. Raises ValueError naming ``where`` and the field."""
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{where}: metadata field 'format' is {meta.get('format')!r}, expected {CACHE_FORMAT!r}")
        try:
            return cls(meta["teacher"], meta["tokenizer"], meta["tokenizer_fingerprint"], int(meta["top_k"]),
                       float(meta["temperature"]), meta["prompt_version"])
        except (KeyError, ValueError) as e:
            raise ValueError(f"{where}: bad metadata field {e}") from e


def encode_shard(header: LogprobsHeader, records: dict[str, TokenLogprobs]) -> bytes:
    """The safetensors bytes of one shard (layout in the module docstring).

    Raises:
        ValueError: a record's k differs from ``header.top_k``.
    """
    from safetensors.numpy import save

    k = header.top_k
    ids = list(records)
    for sid, r in records.items():
        if r.top_k != k:
            raise ValueError(f"sample {sid}: top-k width {r.top_k}, the run records {k}")
    cat = (lambda xs, shape, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(shape, dt))
    lens = [len(records[s]) for s in ids]
    texts = [records[s].text.encode("utf-8") for s in ids]
    tensors = {
        "token_ids": cat([records[s].token_ids for s in ids], (0,), np.int32),
        "token_logprobs": cat([records[s].token_logprobs for s in ids], (0,), np.float16),
        "topk_ids": cat([records[s].topk_ids for s in ids], (0, k), np.int32),
        "topk_logprobs": cat([records[s].topk_logprobs for s in ids], (0, k), np.float16),
        "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        "text_bytes": np.frombuffer(b"".join(texts), np.uint8).copy(),
        "text_offsets": np.concatenate([[0], np.cumsum([len(t) for t in texts])]).astype(np.int64),
    }
    return save(tensors, metadata={**header.metadata(), "sample_ids": json.dumps(ids)})


def write_logprob_shard(ann_dir: str | Path, rank: int, index: int, header: LogprobsHeader,
                        records: dict[str, TokenLogprobs]) -> Path:
    """Write ``logprobs-rank{rank}-{index}.safetensors`` atomically, never over an existing file.

    Raises:
        FileExistsError: the shard exists.
    """
    from dsdrive.annotation.store import write_file_exclusive

    return write_file_exclusive(Path(ann_dir) / logprob_shard_name(rank, index), encode_shard(header, records))


def list_logprob_shards(ann_dir: str | Path) -> list[Path]:
    """Log-prob shards of a folder in record order (shard index, rank); [] when absent."""
    d = Path(ann_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(2)), int(m.group(1)), p) for p in d.iterdir() if (m := LOGPROB_SHARD_RE.match(p.name)) and p.is_file()]
    return [p for _, _, p in sorted(found)]


def remove_orphan_logprob_shards(ann_dir: str | Path, rank: int) -> int:
    """Delete this rank's log-prob shards whose annotation shard is missing (a run killed between
    the two writes); returns how many. Only rank ``rank`` writes them, so other ranks may run."""
    from dsdrive.annotation.store import shard_name

    d, n = Path(ann_dir), 0
    for p in list_logprob_shards(d):
        m = LOGPROB_SHARD_RE.match(p.name)
        if int(m.group(1)) == rank and not (d / shard_name(rank, int(m.group(2)))).exists():
            p.unlink(missing_ok=True)
            n += 1
    for p in d.glob(f".tmp-logprobs-rank{rank}-*") if d.is_dir() else []:
        p.unlink(missing_ok=True)
    return n


def _read_header(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ValueError(f"{path}: not a readable safetensors log-prob shard ({type(e).__name__}: {e})") from e
    header = LogprobsHeader.from_metadata(meta, str(path))
    try:
        ids = json.loads(meta["sample_ids"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: metadata field 'sample_ids' missing or not JSON") from e
    return header, ids


def logprob_sample_ids(ann_dir: str | Path) -> set[str]:
    """Sample ids that have cached log-probs in ``ann_dir`` (reads shard metadata only)."""
    out: set[str] = set()
    for p in list_logprob_shards(ann_dir):
        out.update(_read_header(p)[1])
    return out


class LogprobCache:
    """Every cached record of an annotations folder, by sample id (the last record wins).

    Args:
        ann_dir: the ``dsdrive annotate --out`` folder.

    Attributes:
        header: the run's :class:`LogprobsHeader` (all shards must agree on the teacher, the
            tokenizer fingerprint and k).

    Raises:
        FileNotFoundError: no ``logprobs-rank*-*.safetensors`` in ``ann_dir``.
        ValueError: a shard is unreadable, has bad metadata or inconsistent offsets, or two shards
            disagree on teacher / tokenizer fingerprint / k (the files and values are named).
    """

    def __init__(self, ann_dir: str | Path):
        from safetensors.numpy import load_file

        self.ann_dir = Path(ann_dir)
        paths = list_logprob_shards(self.ann_dir)
        if not paths:
            raise FileNotFoundError(f"{self.ann_dir}: no logprobs-rank*-*.safetensors shards (run `dsdrive annotate ... --logprobs K`)")
        self.header: LogprobsHeader | None = None
        first = None
        self._where: dict[str, tuple[int, int]] = {}
        self._shards: list[dict[str, np.ndarray]] = []
        for p in paths:
            header, ids = _read_header(p)
            if self.header is None:
                self.header, first = header, p
            else:
                for f in ("teacher", "tokenizer_fingerprint", "top_k"):
                    if getattr(header, f) != getattr(self.header, f):
                        raise ValueError(f"{p}: {f} {getattr(header, f)!r} differs from {getattr(self.header, f)!r} in {first}; "
                                         "one annotations folder holds one annotator run's log-probs")
            t = load_file(str(p))
            off, toff = t["offsets"], t["text_offsets"]
            if len(off) != len(ids) + 1 or len(toff) != len(ids) + 1 or off[-1] != len(t["token_ids"]) or toff[-1] != len(t["text_bytes"]):
                raise ValueError(f"{p}: offsets do not match the {len(ids)} sample ids and {len(t['token_ids'])} tokens")
            self._shards.append(t)
            for j, sid in enumerate(ids):
                self._where[sid] = (len(self._shards) - 1, j)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    @property
    def sample_ids(self) -> list[str]:
        return list(self._where)

    def get(self, sample_id: str) -> TokenLogprobs:
        """The record of ``sample_id`` (float32 log-probs). Raises KeyError naming the folder."""
        if sample_id not in self._where:
            raise KeyError(f"{self.ann_dir}: no cached log-probs for sample {sample_id!r}")
        s, j = self._where[sample_id]
        t = self._shards[s]
        a, b = int(t["offsets"][j]), int(t["offsets"][j + 1])
        ta, tb = int(t["text_offsets"][j]), int(t["text_offsets"][j + 1])
        return TokenLogprobs(t["token_ids"][a:b], t["token_logprobs"][a:b].astype(np.float32), t["topk_ids"][a:b],
                             t["topk_logprobs"][a:b].astype(np.float32), bytes(t["text_bytes"][ta:tb]).decode("utf-8"))

    def check_tokenizer(self, tokenizer, student: str = "the student") -> None:
        """Raise ValueError unless ``tokenizer`` has the fingerprint the log-probs were recorded with.

        The message names the annotator, both tokenizers and both fingerprints.
        """
        fp = tokenizer_fingerprint(tokenizer)
        if fp != self.header.tokenizer_fingerprint:
            raise ValueError(
                f"{self.ann_dir}: token log-probs of annotator {self.header.teacher!r} were recorded with tokenizer "
                f"{self.header.tokenizer!r} ({self.header.tokenizer_fingerprint}), but {student}'s tokenizer "
                f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r} is {fp}: token ids do not align. "
                "Use a student with the annotator's tokenizer (--tokenizer_path / --backbone_path), or set "
                "--token_kd_cross_tokenizer uld")


# ------------------------------------------------------------------------------------------- token strings -> ids
@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenIdMapper:
    """Map the token strings an OpenAI-compatible server returns to ids of a byte-level BPE tokenizer
    (Qwen2/2.5, GPT-2, Llama 3, the tiny student's).

    A token is looked up by its bytes (the API's ``bytes`` field, else the string's UTF-8 bytes);
    vLLM's ``token_id:N`` strings (``--return-tokens-as-token-ids``) are taken as they are.

    Args:
        tokenizer: the served model's tokenizer.
        ids_from_server: the server returns ``token_id:N`` strings only (no byte table is built,
            so any tokenizer works).

    Raises:
        ValueError: (constructor) without ``ids_from_server``, the tokenizer is not byte-level (its
            vocabulary holds a token outside the byte alphabet that is not an added token).
    """

    def __init__(self, tokenizer, ids_from_server: bool = False):
        self.vocab_size = len(tokenizer)
        self.by_bytes: dict[bytes, int] = {}
        if ids_from_server:
            return
        u2b = _unicode_to_byte()
        added = {str(t): i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        added_ids = set(added.values())
        for tok, i in tokenizer.get_vocab().items():
            if i in added_ids:
                continue
            try:
                self.by_bytes.setdefault(bytes(u2b[c] for c in tok), i)
            except KeyError:
                raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r}: token {tok!r} (id {i}) is not "
                                 "byte-level BPE; map tokens with the server's ids (--logprobs-token-ids)") from None
        for s, i in added.items():
            self.by_bytes.setdefault(s.encode("utf-8"), i)

    def id_of(self, token: str, token_bytes: list[int] | None = None) -> int:
        """The id of one returned token. Raises ValueError naming the token when it is not in the vocabulary."""
        if token.startswith("token_id:"):
            try:
                i = int(token.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"token {token!r}: not 'token_id:<int>'") from None
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token {token!r}: id outside the tokenizer's {self.vocab_size} ids")
            return i
        key = bytes(token_bytes) if token_bytes is not None else token.encode("utf-8")
        if key not in self.by_bytes:
            raise ValueError(f"token {token!r} (bytes {list(key)}) is not in the tokenizer's vocabulary: "
                             "is --tokenizer the served model's tokenizer?")
        return self.by_bytes[key]


class LogprobRecorder:
    """Mixin of annotators that record token log-probs (``hf-llm``, ``openai`` with ``logprobs`` > 0).

    The runner (:func:`dsdrive.annotation.annotate.run_annotate`) asks :attr:`records_logprobs`,
    takes the records of each batch with :meth:`pop_token_logprobs` and writes them beside the
    annotation shard with :attr:`logprobs_header`. A record is kept only for a sample whose
    annotation succeeded, and it is the log-probs of the very answer that annotation was parsed from.
    """

    logprobs_header: LogprobsHeader | None = None

    def _init_recorder(self, header: LogprobsHeader | None) -> None:
        import threading

        self.logprobs_header = header
        self._token_logprobs: dict[str, TokenLogprobs] = {}
        self._recorder_lock = threading.Lock()

    @property
    def records_logprobs(self) -> bool:
        return self.logprobs_header is not None

    def _keep_logprobs(self, sample_id: str, record: TokenLogprobs) -> None:
        with self._recorder_lock:
            self._token_logprobs[sample_id] = record

    def pop_token_logprobs(self) -> dict[str, TokenLogprobs]:
        """The records kept since the last call (sample id -> :class:`TokenLogprobs`), cleared."""
        with self._recorder_lock:
            out, self._token_logprobs = self._token_logprobs, {}
        return out
