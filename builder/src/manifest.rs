//! What a COPY selects from the context, as text: the sources as written, then one line per
//! selected entry (path, type, mode, content hash, link target, device number). Its sha256 is the
//! step's context input; kept in the step's record, it names the files that changed when the step
//! misses and tells an incremental COPY what to redo. A COPY of a 20,000-file context has 20,000
//! lines, so they share one buffer and are hashed in one pass.

/// The lines of a COPY's selection.
#[derive(Debug, Default)]
pub(crate) struct Manifest {
    /// The lines joined by newlines: exactly what is hashed.
    text: String,
    /// Where each line starts in `text` (a path may itself hold a newline, so the text is never
    /// split on them).
    starts: Vec<usize>,
}

impl Manifest {
    /// Room for about `lines` lines, reserved once (growing a large buffer copies it).
    pub(crate) fn with_capacity(lines: usize) -> Manifest {
        Manifest {
            text: String::with_capacity(lines * 128),
            starts: Vec::with_capacity(lines),
        }
    }

    /// Appends a line that `write` writes.
    pub(crate) fn push_line(&mut self, write: impl FnOnce(&mut String)) {
        if !self.starts.is_empty() {
            self.text.push('\n');
        }
        self.starts.push(self.text.len());
        write(&mut self.text);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> {
        let ends = self.starts.iter().skip(1).map(|next| next - 1);
        self.starts
            .iter()
            .zip(ends.chain([self.text.len()]))
            .map(|(&start, end)| &self.text[start..end])
    }

    /// The sha256 (`sha256:` hex) of the lines joined by newlines.
    pub(crate) fn digest(&self) -> String {
        strata_codec::sha256_digest(self.text.as_bytes()).to_string()
    }

    /// The lines as a step record keeps them.
    pub(crate) fn to_lines(&self) -> Vec<String> {
        self.lines().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_digest_is_of_the_joined_text() {
        let mut m = Manifest::default();
        assert!(m.is_empty());
        assert_eq!(m.lines().count(), 0);
        for line in ["source . . ", "a\nb\tfile", "", "c"] {
            m.push_line(|t| t.push_str(line));
        }
        assert_eq!(m.to_lines(), ["source . . ", "a\nb\tfile", "", "c"]);
        assert_eq!(
            m.digest(),
            strata_codec::sha256_digest(b"source . . \na\nb\tfile\n\nc").to_string()
        );
    }
}
