"""Model folders in the Hugging Face convention: ``config.json`` + ``model.safetensors`` + the
vocabulary (``universe.bed.gz`` + ``vocab.json``).

A folder is saved with :meth:`PretrainedMixin.save_pretrained` and read back with
:meth:`PretrainedMixin.from_pretrained`, which also accepts a Hugging Face Hub repository id:
that goes through :func:`huggingface_hub.snapshot_download` (its cache, revisions, tokens and
offline mode), not through hub code of our own.

``config.json`` holds the model's config fields plus ``model_type``, ``architectures`` (the
class that was saved), ``atacformer_version`` and ``vocab_hash``; loading refuses a folder
whose vocabulary is not the one the config was saved with.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from atacformer.errors import AtacformerError, VocabularyMismatchError
from atacformer.vocab import Vocabulary

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
VOCAB_FILES = ("universe.bed.gz", "universe.bed", "vocab.json")
# keys config.json carries besides the config's own fields
META_KEYS = frozenset({"model_type", "architectures", "atacformer_version", "vocab_hash",
                       "transformers_version", "torch_dtype", "dtype", "_name_or_path"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


class ModelConfig:
    """Base of the dataclass configs: JSON round trip and strict field checking."""

    model_type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The config's fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build a config from a dict (e.g. a ``config.json``); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - META_KEYS)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
        if d.get("model_type", cls.model_type) != cls.model_type:
            raise ValueError(f"{cls.__name__} expects model_type {cls.model_type!r}, "
                             f"got {d['model_type']!r}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes):
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def resolve_model_dir(path_or_repo_id, *, revision: str | None = None, cache_dir=None,
                      local_files_only: bool = False, token: str | bool | None = None) -> Path:
    """A local model folder, or the local snapshot of a Hub repository.

    A path that exists is used as is; anything else that looks like ``owner/name`` is
    fetched with :func:`huggingface_hub.snapshot_download` (cached; ``local_files_only=True``
    or ``HF_HUB_OFFLINE=1`` read the cache only).
    """
    p = Path(os.fspath(path_or_repo_id)).expanduser()
    if p.is_dir():
        return p
    s = os.fspath(path_or_repo_id)
    if p.exists():
        raise NotADirectoryError(f"{s}: a model is a folder (config.json + model.safetensors)")
    if not _REPO_ID.match(s):
        raise FileNotFoundError(f"{s}: no such model folder, and not a Hub repository id")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            s, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            token=token,
            allow_patterns=["*.json", "*.safetensors", "universe.bed*", TORCH_WEIGHTS_NAME],
        )
    except Exception as e:  # offline, unknown repository, no access: say which and why
        raise FileNotFoundError(f"{s}: no such local folder, and the Hugging Face Hub repository "
                                f"could not be fetched ({type(e).__name__}: {e})") from e
    return Path(local)


def read_config_json(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME}; not a model folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def _load_safetensors(path: Path, device: str) -> dict[str, torch.Tensor]:
    """``load_file`` with a damaged file reported in one line naming it."""
    try:
        return load_file(path, device=device)
    except Exception as e:  # SafetensorError, OSError, ValueError... from the Rust reader
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AtacformerError(f"{path}: is truncated or not a safetensors file ({reason}); "
                              "re-export or re-download it") from None


def load_state_dict(directory: Path, map_location="cpu") -> dict[str, torch.Tensor]:
    """The weights of a model folder: ``model.safetensors``, sharded safetensors (with an
    index), or a legacy ``pytorch_model.bin`` (loaded with ``weights_only=True``).

    Raises
    ------
    AtacformerError
        A weights file is truncated or damaged (the message names it).
    """
    d = Path(directory)
    device = str(map_location)
    if (d / WEIGHTS_NAME).is_file():
        return _load_safetensors(d / WEIGHTS_NAME, device)
    if (d / WEIGHTS_INDEX_NAME).is_file():
        try:
            index = json.loads((d / WEIGHTS_INDEX_NAME).read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise AtacformerError(f"{d / WEIGHTS_INDEX_NAME}: not a safetensors index ({type(e).__name__}: {e}); "
                                  "re-export or re-download it") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_load_safetensors(d / shard, device))
        return state
    if (d / TORCH_WEIGHTS_NAME).is_file():
        try:
            return torch.load(d / TORCH_WEIGHTS_NAME, map_location=map_location, weights_only=True)
        except Exception as e:  # zip/pickle errors of a damaged file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise AtacformerError(f"{d / TORCH_WEIGHTS_NAME}: is truncated or not a torch weights file "
                                  f"({reason}); re-export or re-download it") from None
    raise FileNotFoundError(f"{d}: no {WEIGHTS_NAME} (or {TORCH_WEIGHTS_NAME}) weights found")


def load_folder_vocab(directory: Path) -> Vocabulary | None:
    """The vocabulary stored in a model folder, or ``None`` when it has none."""
    d = Path(directory)
    if not any((d / n).is_file() for n in VOCAB_FILES[:2]):
        return None
    return Vocabulary.load(d)


def _umask() -> int:
    """The process's umask (read without changing it where the OS tells it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def set_default_modes(directory) -> None:
    """Give ``directory`` and everything in it the modes a plain ``open()``/``mkdir()`` gives
    (``0o666``/``0o777`` less the umask: 0644/0755 usually), whatever wrote them: files
    made through :func:`tempfile.mkstemp` or :func:`tempfile.mkdtemp` are private
    (0600/0700) and a model folder must stay readable by whoever may read its parent."""
    mask = _umask()
    root = Path(directory)
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _write_file(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``: a save that dies leaves the old file
    or none, never a truncated one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` holding ``config``
    (a :class:`ModelConfig`) and ``vocab`` (a :class:`~atacformer.vocab.Vocabulary` or None).

    Task models keep their backbone under the attribute ``base_model_prefix``; as in
    transformers, a task model loads from a backbone-only folder (its head newly
    initialised, with a warning) and a backbone loads from a task folder (head dropped).
    """

    config_class: ClassVar[type] = ModelConfig
    base_model_prefix: ClassVar[str] = ""
    is_base_model: ClassVar[bool] = False

    # -- saving -------------------------------------------------------------------------
    def save_pretrained(self, save_directory) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the vocabulary into a folder.

        Examples
        --------
        >>> model.save_pretrained("my_model")          # doctest: +SKIP
        >>> type(model).from_pretrained("my_model")    # doctest: +SKIP
        """
        from atacformer import __version__

        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        vocab: Vocabulary | None = getattr(self, "vocab", None)
        meta = {
            **self.config.to_dict(),
            "model_type": self.config.model_type,
            "architectures": [type(self).__name__],
            "atacformer_version": __version__,
            "vocab_hash": vocab.hash if vocab is not None else None,
        }
        _write_file(d / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n"))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        _write_file(d / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        if vocab is not None:
            vocab.save(d)
        set_default_modes(d)
        return d

    # -- loading ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id, *, revision: str | None = None, cache_dir=None,
                        local_files_only: bool = False, token: str | bool | None = None,
                        map_location="cpu"):
        """Load a model folder (or Hub repository) saved by :meth:`save_pretrained`.

        Parameters
        ----------
        path_or_repo_id
            A local folder, or a Hub id such as ``"databio/atacformer-base-hg38"``.
        revision, cache_dir, local_files_only, token
            Passed to :func:`huggingface_hub.snapshot_download` for Hub ids.
        map_location
            Device the weights are loaded onto.

        Raises
        ------
        VocabularyMismatchError
            The folder's vocabulary is not the one its config was saved with.
        """
        d = resolve_model_dir(path_or_repo_id, revision=revision, cache_dir=cache_dir,
                              local_files_only=local_files_only, token=token)
        meta = read_config_json(d)
        vocab = load_folder_vocab(d)
        config = cls._config_from_json(meta, d)
        cls._check_vocab(d, meta, config, vocab)
        model = cls._build_for_loading(config, vocab)
        state = cls._convert_state_dict(load_state_dict(d, map_location), meta, config)
        model._load_converted_state(state, d)
        model.to(map_location)
        model.eval()
        return model

    @classmethod
    def _config_from_json(cls, meta: dict, directory: Path):
        if meta.get("model_type") != cls.config_class.model_type:
            raise ValueError(f"{directory}: config.json has model_type {meta.get('model_type')!r}; "
                             f"{cls.__name__} needs {cls.config_class.model_type!r} "
                             "(atacformer.models.load_model picks the right class)")
        return cls.config_class.from_dict(meta)

    @classmethod
    def _check_vocab(cls, d: Path, meta: dict, config, vocab: Vocabulary | None) -> None:
        recorded = meta.get("vocab_hash")
        if recorded and vocab is None:
            raise VocabularyMismatchError(
                f"{d}: config.json records vocabulary {recorded[:12]} but the folder has no "
                "universe.bed.gz")
        if vocab is not None and recorded and vocab.hash != recorded:
            raise VocabularyMismatchError(
                f"{d}: the folder's vocabulary ({vocab!r}) is not the one the model was saved "
                f"with (config.json vocab_hash {recorded[:12]}); its token ids would not match "
                "the embedding rows")
        if vocab is not None and len(vocab) != config.vocab_size:
            raise VocabularyMismatchError(
                f"{d}: the vocabulary has {len(vocab):,} tokens ({vocab.n_regions:,} regions + "
                f"{len(vocab.special_tokens)} special tokens) but config.json has vocab_size "
                f"{config.vocab_size:,}")

    @classmethod
    def _build_for_loading(cls, config, vocab: Vocabulary | None):
        return cls(config, vocab=vocab)

    @classmethod
    def _convert_state_dict(cls, state: dict, meta: dict, config) -> dict:
        return state

    def _load_converted_state(self, state: dict[str, torch.Tensor], source) -> None:
        """Load ``state``, adding or removing the backbone prefix as needed (see class doc)."""
        own = self.state_dict()
        prefix = self.base_model_prefix + "." if self.base_model_prefix else ""
        if prefix and self.is_base_model:
            if any(k.startswith(prefix) for k in state):  # a task folder into a backbone
                dropped = sorted(k for k in state if not k.startswith(prefix))
                if dropped:
                    logger.info("%s: ignoring task-head weights %s", source, dropped)
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        elif prefix and not any(k.startswith(prefix) for k in state):
            state = {prefix + k: v for k, v in state.items()}  # a backbone folder into a task model
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise ValueError(f"{source}: weights {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} "
                             f"do not belong to {type(self).__name__}")
        if missing:
            if prefix and not self.is_base_model and all(not k.startswith(prefix) for k in missing):
                logger.warning("%s: %s weights %s are not in the folder and were newly initialised",
                               source, type(self).__name__, missing)
            else:
                raise ValueError(f"{source}: weights missing for {type(self).__name__}: "
                                 f"{missing[:5]}{'...' if len(missing) > 5 else ''}")
        for k, v in state.items():
            if own[k].shape != v.shape:
                raise ValueError(f"{source}: weight {k} has shape {tuple(v.shape)}, "
                                 f"the config gives {tuple(own[k].shape)}")
        self.load_state_dict(state, strict=False)
