//! Planning: the stage DAG (petgraph) and BLAKE3 fingerprints.
