"""Prints the study's comparison table (accuracy, macro precision, macro recall, macro AUC per
evaluated model) from runs/<pipeline>/metrics.yaml as Markdown, for the README.
Usage: python3 scripts/comparison_table.py runs/galaxy10/metrics.yaml"""
import sys

import yaml

doc = yaml.safe_load(open(sys.argv[1]))
print("| stage | model | accuracy | precision (macro) | recall (macro) | AUC (macro) |")
print("| --- | --- | --- | --- | --- | --- |")
for stage, body in doc["stages"].items():
    for e in (body.get("evaluations") or {}).values():
        m = e["macro_avg"]
        auc = e.get("macro_auc")
        auc = "n/a" if auc is None else f"{auc:.3f}"
        print(f"| {stage} | {e['model']} | {e['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {auc} |")
