//! Syntax: the pest grammar behind a wall, the AST with spans, and `gpl fmt`.
