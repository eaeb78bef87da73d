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

    /// Appends an entry's line: `path\ttype\tmode (octal)\tcontent hash\tlink target\tdevice`.
    /// Written by hand: through `write!` the formatting was most of a no-op rebuild's time
    /// after the context walk.
    pub(crate) fn push_entry(
        &mut self,
        path: &str,
        kind: &str,
        mode: u32,
        hash: &str,
        link: &str,
        rdev: u64,
    ) {
        self.push_line(|l| {
            for field in [path, "\t", kind, "\t"] {
                l.push_str(field);
            }
            push_digits(l, u64::from(mode), 8);
            for field in ["\t", hash, "\t", link, "\t"] {
                l.push_str(field);
            }
            push_digits(l, rdev, 10);
        });
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

/// Appends `n` in `radix` (2 to 10), as `{}` and `{:o}` write it.
fn push_digits(s: &mut String, mut n: u64, radix: u64) {
    let mut digits = [0u8; 64];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit below 10: `n % radix` with radix <= 10.
        digits[at] = b'0' + (n % radix) as u8;
        n /= radix;
        if n == 0 {
            break;
        }
    }
    s.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lines_are_formatted_as_write_would() {
        let mut m = Manifest::default();
        m.push_entry("a b/c", "file", 0o4755, "ab12", "", 0);
        m.push_entry("d", "char", 0, "", "", u64::MAX);
        m.push_entry("l", "symlink", 0o777, "", "../t", 1 << 20);
        let expected = [
            format!("a b/c\tfile\t{:o}\tab12\t\t0", 0o4755),
            format!("d\tchar\t0\t\t\t{}", u64::MAX),
            format!("l\tsymlink\t777\t\t../t\t{}", 1 << 20),
        ];
        assert_eq!(m.to_lines(), expected);
    }

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
