//! Tar headers byte for byte as Go's `archive/tar` writes them for containerd's layer writer.
//!
//! containerd (and so BuildKit) asks for `FormatPAX`, which Go's writer treats as "USTAR when the
//! header fits, PAX otherwise". A header fits USTAR when its name is ASCII and either at most 100
//! bytes or splittable into USTAR's prefix and name fields, its link name is ASCII and at most 100
//! bytes, its numbers fit their octal fields, and it has no xattrs. Otherwise a PAX extended header
//! (`PaxHeaders.0`) with sorted records comes first and the main header carries truncated values.

use std::collections::BTreeMap;
use std::io::{self, Write};

pub(crate) const BLOCK: usize = 512;

const NAME_SIZE: usize = 100;
const PREFIX_SIZE: usize = 155;

/// The type flags strata writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryType {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Directory,
    Fifo,
}

impl EntryType {
    fn flag(self) -> u8 {
        match self {
            EntryType::Regular => b'0',
            EntryType::HardLink => b'1',
            EntryType::Symlink => b'2',
            EntryType::Char => b'3',
            EntryType::Block => b'4',
            EntryType::Directory => b'5',
            EntryType::Fifo => b'6',
        }
    }
}

/// One tar entry's metadata. Names are raw bytes: Linux paths need not be UTF-8.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub name: Vec<u8>,
    pub link_name: Vec<u8>,
    pub entry_type: EntryType,
    /// Permission bits plus setuid, setgid and sticky (07777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Whole seconds since the epoch.
    pub mtime: i64,
    pub dev_major: u64,
    pub dev_minor: u64,
    /// Extended attributes, written as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Header {
    pub fn new(name: Vec<u8>, entry_type: EntryType) -> Self {
        Header {
            name,
            link_name: Vec::new(),
            entry_type,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

fn fits_octal(width: usize, x: i64) -> bool {
    x >= 0 && x < 1i64 << ((width - 1) * 3)
}

/// Go's `formatOctal`: zero-padded octal leaving room for a NUL; zero when it does not fit.
fn put_octal(field: &mut [u8], x: i64) {
    let x = if fits_octal(field.len(), x) { x } else { 0 };
    let s = format!("{x:o}");
    let pad = field.len().saturating_sub(s.len() + 1);
    let mut text = vec![b'0'; pad];
    text.extend_from_slice(s.as_bytes());
    put_str(field, &text);
}

/// Go's `formatString`: copies what fits, NUL-terminates when there is room.
fn put_str(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
    if n < field.len() {
        field[n] = 0;
    }
}

fn is_ascii(s: &[u8]) -> bool {
    s.iter().all(|&b| b < 0x80)
}

/// Go's `toASCII` on bytes: every byte of a non-ASCII character (or invalid UTF-8) is dropped.
fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&b| b < 0x80).collect()
}

/// Go's `splitUSTARPath`: a long ASCII name split at a slash into prefix and name fields.
fn split_ustar_path(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut length = s.len();
    if length <= NAME_SIZE || !is_ascii(s) {
        return None;
    } else if length > PREFIX_SIZE + 1 {
        length = PREFIX_SIZE + 1;
    } else if s[length - 1] == b'/' {
        length -= 1;
    }
    let i = s[..length].iter().rposition(|&b| b == b'/')?;
    let name_len = s.len() - i - 1;
    if i == 0 || name_len > NAME_SIZE || name_len == 0 || i > PREFIX_SIZE {
        return None;
    }
    Some((&s[..i], &s[i + 1..]))
}

/// Go's `formatPAXRecord`: `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut size = key.len() + value.len() + 3;
    size += size.to_string().len();
    let build = |size: usize| {
        let mut r = size.to_string().into_bytes();
        r.push(b' ');
        r.extend_from_slice(key);
        r.push(b'=');
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    };
    let record = build(size);
    if record.len() != size {
        build(record.len())
    } else {
        record
    }
}

/// Go's `path.Join(dir, "PaxHeaders.0", file)` for the names strata writes (already clean).
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let split = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let (dir, file) = name.split_at(split);
    let mut out = dir.to_vec();
    out.extend_from_slice(b"PaxHeaders.0");
    if !file.is_empty() {
        out.push(b'/');
        out.extend_from_slice(file);
    }
    let mut out = to_ascii(&out);
    out.truncate(NAME_SIZE);
    while out.last() == Some(&b'/') {
        out.pop();
    }
    out
}

/// Sets the magic, version and checksum (6 octal digits, NUL, space) of a filled block.
fn seal(block: &mut [u8; BLOCK]) {
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].fill(b' ');
    let sum: i64 = block.iter().map(|&b| i64::from(b)).sum();
    put_octal(&mut block[148..155], sum);
    block[155] = b' ';
}

/// Errors a header can have that no tar format strata writes can carry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("device number {0} does not fit a tar header")]
    DeviceNumber(u64),
}

/// Writes the header (and PAX extended header when needed). The caller writes the content and
/// its padding.
pub(crate) fn write_header<W: Write>(out: &mut W, h: &Header) -> io::Result<()> {
    for dev in [h.dev_major, h.dev_minor] {
        if !fits_octal(8, dev as i64) {
            return Err(io::Error::other(HeaderError::DeviceNumber(dev)));
        }
    }
    let mut pax: BTreeMap<&[u8], Vec<u8>> = BTreeMap::new();
    let mut ustar = true;
    let mut prefix_split = None;
    if !is_ascii(&h.name) || h.name.len() > NAME_SIZE {
        prefix_split = split_ustar_path(&h.name);
        if prefix_split.is_none() {
            ustar = false;
        }
        pax.insert(b"path", h.name.clone());
    }
    if !is_ascii(&h.link_name) || h.link_name.len() > NAME_SIZE {
        ustar = false;
        pax.insert(b"linkpath", h.link_name.clone());
    }
    for (key, value, width) in [
        (&b"uid"[..], h.uid, 8),
        (b"gid", h.gid, 8),
        (b"size", h.size, 12),
    ] {
        if value > i64::MAX as u64 || !fits_octal(width, value as i64) {
            ustar = false;
            pax.insert(key, value.to_string().into_bytes());
        }
    }
    if !fits_octal(12, h.mtime) {
        ustar = false;
        pax.insert(b"mtime", h.mtime.to_string().into_bytes());
    }
    let xattr_keys: Vec<Vec<u8>> = h
        .xattrs
        .iter()
        .map(|(k, _)| [&b"SCHILY.xattr."[..], k].concat())
        .collect();
    for (key, (_, value)) in xattr_keys.iter().zip(&h.xattrs) {
        ustar = false;
        pax.insert(key, value.clone());
    }

    let mut block = [0u8; BLOCK];
    if ustar {
        match prefix_split {
            Some((prefix, name)) => {
                put_str(&mut block[0..100], name);
                put_str(&mut block[345..500], prefix);
            }
            None => put_str(&mut block[0..100], &h.name),
        }
        put_str(&mut block[157..257], &h.link_name);
    } else {
        let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut ext = [0u8; BLOCK];
        put_str(&mut ext[0..100], &pax_header_name(&h.name));
        put_octal(&mut ext[100..108], 0);
        put_octal(&mut ext[108..116], 0);
        put_octal(&mut ext[116..124], 0);
        put_octal(&mut ext[124..136], data.len() as i64);
        put_octal(&mut ext[136..148], 0);
        ext[156] = b'x';
        seal(&mut ext);
        out.write_all(&ext)?;
        out.write_all(&data)?;
        out.write_all(&[0u8; BLOCK][..padding(data.len() as u64)])?;
        put_str(&mut block[0..100], &to_ascii(&h.name));
        put_str(&mut block[157..257], &to_ascii(&h.link_name));
    }
    put_octal(&mut block[100..108], i64::from(h.mode));
    put_octal(&mut block[108..116], h.uid.min(i64::MAX as u64) as i64);
    put_octal(&mut block[116..124], h.gid.min(i64::MAX as u64) as i64);
    put_octal(&mut block[124..136], h.size.min(i64::MAX as u64) as i64);
    put_octal(&mut block[136..148], h.mtime);
    block[156] = h.entry_type.flag();
    // uname and gname stay empty: ownership is numeric.
    put_octal(&mut block[329..337], h.dev_major as i64);
    put_octal(&mut block[337..345], h.dev_minor as i64);
    seal(&mut block);
    out.write_all(&block)
}

/// Zero bytes needed after `len` bytes of content to reach a block boundary.
pub(crate) fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

/// The end of an archive: two zero blocks, as Go's `Writer.Close` writes.
pub(crate) fn write_trailer<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(&[0u8; 2 * BLOCK])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, h).unwrap();
        out
    }

    #[test]
    fn ustar_fields_are_formatted_like_go() {
        let mut h = Header::new(b"etc/passwd".to_vec(), EntryType::Regular);
        h.mode = 0o644;
        h.size = 5;
        h.mtime = 1_700_000_000;
        let b = encode(&h);
        assert_eq!(b.len(), 512);
        assert_eq!(&b[100..108], b"0000644\0");
        assert_eq!(&b[108..116], b"0000000\0");
        assert_eq!(&b[124..136], b"00000000005\0");
        assert_eq!(&b[136..148], format!("{:011o}\0", 1_700_000_000).as_bytes());
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert_eq!(&b[329..345], b"0000000\x000000000\0");
        assert_eq!(b[155], b' ');
        assert_eq!(b[154], 0);
        let sum: u32 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(x)
                }
            })
            .sum();
        let text = std::str::from_utf8(&b[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(text, 8).unwrap(), sum);
    }

    #[test]
    fn long_ascii_name_uses_the_prefix_field() {
        let name = format!("{}/{}", "d".repeat(80), "f".repeat(60));
        let b = encode(&Header::new(name.clone().into_bytes(), EntryType::Regular));
        assert_eq!(b.len(), 512);
        assert_eq!(&b[0..60], "f".repeat(60).as_bytes());
        assert_eq!(&b[345..425], "d".repeat(80).as_bytes());
    }

    #[test]
    fn xattrs_and_unsplittable_names_get_a_pax_header() {
        let name = "n".repeat(120);
        let mut h = Header::new(name.clone().into_bytes(), EntryType::Regular);
        h.xattrs
            .push((b"security.capability".to_vec(), vec![1, 0, 0, 2]));
        let b = encode(&h);
        assert_eq!(b[156], b'x');
        assert_eq!(&b[0..22], b"PaxHeaders.0/nnnnnnnnn");
        let records = &b[512..];
        let text = String::from_utf8_lossy(records);
        // Sorted keys: "SCHILY..." sorts before "path".
        let xattr_at = text.find("SCHILY.xattr.security.capability=").unwrap();
        let path_at = text.find(&format!("path={name}\n")).unwrap();
        assert!(xattr_at < path_at);
        assert!(text.starts_with("41 SCHILY.xattr.security.capability=\x01\0\0\x02\n"));
        let main = &b[b.len() - 512..];
        assert_eq!(&main[0..100], &name.as_bytes()[..100]);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        // 3 + 4 + 90 = 97, plus 2 digits = 99, plus... record length crosses 100.
        let r = pax_record(b"path", &[b'x'; 91]);
        assert_eq!(&r[..4], b"101 ");
        assert_eq!(r.len(), 101);
    }

    #[test]
    fn pax_header_names() {
        assert_eq!(pax_header_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name(b"a/b/"), b"a/b/PaxHeaders.0");
        assert_eq!(pax_header_name(b"c"), b"PaxHeaders.0/c");
    }
}
