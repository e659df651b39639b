//! Evaluation: classification metrics, ROC, statistical tests, ensembles.
