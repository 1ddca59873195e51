"""OpenAI's graders (``openai.types.graders``), run locally: string_check, text_similarity, python (in a
sandboxed process), score_model and label_model (a tunesmith model as the judge) and multi.

    grader = load_grader("grader.json")         # GraderError (exit 2) if the spec does not validate
    grader.check_items(rows)                    # GraderError if a template names a field no row has
    grades = grader.grade([sample_from_text(reply) for reply in replies], rows)
    grader.close()
"""

from __future__ import annotations

from tunesmith.graders.grader import Grader, load_grader
from tunesmith.graders.types import Grade, GraderError, Sample, sample_from_text

__all__ = ["Grade", "Grader", "GraderError", "Sample", "load_grader", "sample_from_text"]
