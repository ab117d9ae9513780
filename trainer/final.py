"""The end of a completed run: final adapter, F1 evaluation, then the final marker.

Order matters to the uploader: the old marker goes first; the adapter, the tokenizer and
`eval_results.json` are all written to a temporary folder, which is renamed to `final/` only
when it is complete (so no look at `final/` ever sees it half-written); only then the marker is
written (step = final global step).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.layout import FINAL_DIRNAME
from shared.markers import build_marker, remove_marker, write_marker
from trainer.evaluate import F1Results, score, write_results
from trainer.generate import generate_answers
from trainer.records import NerExample

log = logging.getLogger(__name__)

FINAL_TMP_PREFIX = ".final-tmp-"
FOLDER_MODE = 0o755


@dataclass(frozen=True)
class F1Request:
    examples: Sequence[NerExample]
    entity_types: Sequence[str]
    batch_size: int
    max_new_tokens: int


def save_adapter(model: Any, tokenizer: Any, output_dir: Path,
                 before_publish: Callable[[Path], None] | None = None) -> Path:
    """Write adapter, adapter config and tokenizer to `<output_dir>/final` (replacing it).

    `before_publish(folder)` may add files (the evaluation) to the folder before it is renamed
    into place.
    """
    output_dir = Path(output_dir)
    final_dir = output_dir / FINAL_DIRNAME
    remove_marker(output_dir, FINAL_DIRNAME)
    staging = Path(tempfile.mkdtemp(prefix=FINAL_TMP_PREFIX, dir=output_dir))
    staging.chmod(FOLDER_MODE)  # mkdtemp makes it 0700; checkpoint folders are 0755
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if before_publish is not None:
            before_publish(staging)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(staging, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_dir


def evaluate_f1(model: Any, tokenizer: Any, request: F1Request) -> F1Results:
    answers = generate_answers(model, tokenizer, request.examples, request.entity_types,
                               batch_size=request.batch_size,
                               max_new_tokens=request.max_new_tokens)
    results = score([ex.entities for ex in request.examples], answers)
    log.info("entity F1", extra={"f1": round(results.overall.f1, 4),
                                 "precision": round(results.overall.precision, 4),
                                 "recall": round(results.overall.recall, 4),
                                 "malformed": results.malformed, "samples": results.samples})
    return results


def finalize(
    model: Any, tokenizer: Any, output_dir: Path, *, run_id: str, step: int,
    request: F1Request, extra: dict[str, Any],
) -> F1Results:
    """Final adapter, `eval_results.json` in it, then the final marker; returns the F1."""
    results = evaluate_f1(model, tokenizer, request)
    final_dir = save_adapter(model, tokenizer, output_dir, before_publish=lambda folder:
                             write_results(folder, results, {"step": step, "run_id": run_id,
                                                             **extra}))
    marker = build_marker(output_dir, FINAL_DIRNAME, run_id=run_id, step=step)
    write_marker(output_dir, marker)
    log.info("final adapter complete", extra={"path": str(final_dir), "step": step})
    return results
