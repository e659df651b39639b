//! Stage kinds: maps a checked program onto stage specs and their executors.
