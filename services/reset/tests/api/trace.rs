//! Placeholder until the trace test lands.
