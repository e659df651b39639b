//! Checking: imports, names, argument types, model shapes; every diagnostic in `diagnostics.rs`.
