//! Reports: PNG plots with an embedded font, the self-contained HTML report, metrics.yaml.
