//! Dockerfile text to a build graph.
//!
//! Parses Dockerfiles exactly as BuildKit's `docker/dockerfile:1` frontend does, expands shell words
//! the way its lexer does, matches `.dockerignore` patterns as moby's patternmatcher does, and resolves
//! stages into a graph. Pure: no I/O beyond the text it is handed.
