//! The build solver.
//!
//! Walks the build graph from the frontend, computes each step's cache key before doing any work, runs
//! the misses (RUN in the runtime sandbox, COPY/ADD into new layers), and assembles the image config,
//! history and manifest into the store. Emits progress events; knows nothing of terminals.
