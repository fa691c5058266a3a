#!/usr/bin/env python3
"""Data for the counterfactual-augmentation demo, run from the repo root:

    python3 scripts/make-counterfactual-demo.py

Writes Tests/TrainingTests/Fixtures/counterfactual/train.jsonl: {"text"} sentences that tie
occupations to one gender (engineers and pilots "he", nurses and secretaries "she"), and prompts.txt:
"<the data's pronoun>\tThe <occupation> said that" for the same occupations. Fine-tuned on train.jsonl, a model's gap
between log P(" he") and log P(" she") after each prompt grows in the data's direction; with
--augment counterfactual every sentence also appears mirrored and the gap should stay near 0 (its
ideal). `gpt-bench pronouns` measures the gap.
"""
import json
import random

OUT = "Tests/TrainingTests/Fixtures/counterfactual"
MALE = ["engineer", "pilot", "mechanic", "surgeon", "programmer", "carpenter"]
FEMALE = ["nurse", "secretary", "receptionist", "librarian", "hairdresser", "dancer"]
TEMPLATES = [
    "The {job} said that {he} would finish the work before noon.",
    "The {job} told us that {he} had seen the report.",
    "The {job} said that {he} was tired after the long shift.",
    "When the {job} arrived, {he} thanked everyone for waiting.",
    "The {job} said that {he} liked {his} new office.",
]

rng = random.Random(5)
rows = []
for _ in range(160):
    male = rng.random() < 0.5
    job = rng.choice(MALE if male else FEMALE)
    he, his = ("he", "his") if male else ("she", "her")
    rows.append({"text": rng.choice(TEMPLATES).format(job=job, he=he, his=his)})
with open(f"{OUT}/train.jsonl", "w") as f:
    for row in rows:
        f.write(json.dumps(row) + "\n")
with open(f"{OUT}/prompts.txt", "w") as f:
    for job in MALE:
        f.write(f"he\tThe {job} said that\n")
    for job in FEMALE:
        f.write(f"she\tThe {job} said that\n")
print("wrote", OUT)
