//! fastvirt node agent (being built).
