"""Reload a student saved by a recipe the way it is served, score its eval sets, print the metrics as JSON.

``python tests/rehearsal_reload.py OUTPUT_DIR`` (run by ``tests/test_rehearsal.py`` in the offline Hub environment):
cross-encoders through ``sentence_transformers.CrossEncoder``, bi-encoders through ``SentenceTransformer`` (cosine
of its embeddings), decoder yes/no rerankers through the project's own Qwen3-Reranker scorer, all in fp32. The
metrics are those the recipes report (:func:`hf_distill.evaluation.ranking_quality`), plus the teacher's metrics
from each file's scores, computed in float64.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def main(output_dir: str) -> None:
    from hf_distill.data import read_groups
    from hf_distill.evaluation import load_scorer, ranking_quality, split_teacher
    from hf_distill.kinds import is_causal_lm_checkpoint
    from hf_distill.st_format import declared_pooling

    report = json.loads((Path(output_dir) / "distillation_report.json").read_text())
    eval_sets = {name: read_groups(path, require_scores=False) for name, path in report["eval_files"].items()}
    result: dict = {"student": {}, "teacher": {}}
    if report["student_kind"] == "embedding":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(output_dir, device="cpu")

        def score(groups):
            scores = []
            for group in groups:
                query = model.encode([group.query], prompt_name="query", convert_to_tensor=True)
                passages = model.encode(list(group.passages), prompt_name="document", convert_to_tensor=True)
                scores.append(torch.nn.functional.cosine_similarity(query, passages).tolist())
            return scores

        result["pooling"] = declared_pooling(output_dir)[0]
        base = declared_pooling(report["base_model"])
        result["base_pooling"] = base[0] if base else None
    elif is_causal_lm_checkpoint(output_dir):
        from hf_distill.teachers import score_groups

        scorer = load_scorer("reranker", output_dir, instruction=report.get("instruction"), device="cpu")

        def score(groups):
            return score_groups(scorer, groups, progress=False)
    else:
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(output_dir, device="cpu", activation_fn=torch.nn.Identity())

        def score(groups):
            return [np.asarray(model.predict([(g.query, p) for p in g.passages])).reshape(-1).tolist() for g in groups]

    for name, groups in eval_sets.items():
        student, teacher = split_teacher(ranking_quality(groups, score(groups)))
        result["student"][name] = student
        if teacher:
            result["teacher"][name] = teacher
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
