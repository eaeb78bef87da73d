//! Parallel gzip whose bytes do not depend on the number of threads.
//!
//! The input is cut into fixed 128 KiB blocks (pigz's default). Each block is deflated on its own,
//! primed with the previous 32 KiB of input as a preset dictionary so matches can reach back across
//! the cut exactly as in one stream, and ends with a sync flush (an empty stored block) so blocks
//! concatenate into one valid raw deflate stream; the last block ends the stream instead. The CRC-32
//! of each block is computed beside it and combined in order. Block boundaries depend only on the
//! amount of data, and every block is a pure function of (dictionary, block, level, is-last), made
//! by a compressor of its own (see [`deflate_block`]), so one thread or sixteen produce the same
//! bytes. Any gzip reader (gunzip, Go's `compress/gzip`,
//! `flate2`) reads the result as a single member.
//!
//! Blocks of random-looking bytes (already compressed or encrypted files) are stored rather than
//! deflated, see [`deflate_block`]: deflate spends as long on them as on text and gains nothing.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

/// Input bytes per independently compressed block.
const BLOCK_SIZE: usize = 128 * 1024;
/// Deflate's window: how much earlier input a block may refer to.
const DICT_SIZE: usize = 32 * 1024;

/// One block of work: its input, the input just before it, and whether it ends the stream.
struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

/// A compressed block with the CRC-32 of its input.
#[derive(Clone)]
struct Block {
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// Whether `data` is all zero bytes, compared 64 at a time (a loop the compiler vectorises).
fn all_zero(data: &[u8]) -> bool {
    let chunks = data.chunks_exact(64);
    chunks.remainder().iter().all(|&b| b == 0)
        && chunks
            .into_iter()
            .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Blocks shorter than this are always deflated: probing them would cost more than it saves.
const PROBE_MIN: usize = 16 * 1024;
/// How much of a block is deflated to see whether it compresses at all.
const PROBE_SAMPLE: usize = 8 * 1024;

/// Compresses one block, with a compressor of its own: a pure function of its arguments.
/// zlib-rs's output for a block after `reset` was seen to depend on what the compressor had
/// deflated before (which worker, which earlier block), and then the bytes would depend on the
/// thread count and on timing; a new compressor (a few hundred KiB zeroed, against milliseconds
/// of deflate per block) has no past.
///
/// Random-looking input (encrypted or already compressed files, which images are full of) costs
/// deflate as much time as text and gains nothing, so a block whose bytes are as evenly spread as
/// random data's and whose first 8 KiB do not shrink is written as stored blocks instead: valid
/// deflate that every reader takes, ~5 bytes per 64 KiB bigger than the input, at memcpy speed.
fn deflate_block(
    level: flate2::Compression,
    dict: &[u8],
    data: &[u8],
    last: bool,
) -> io::Result<Block> {
    let compress = &mut Compress::new(level, false);
    let deflated = if looks_incompressible(compress, dict, data)? {
        stored(data, last)
    } else {
        deflate(compress, dict, data, last)?
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    Ok(Block { deflated, crc })
}

/// Deflates `data` primed with `dict`, ending with a sync flush (or the end of the stream).
fn deflate(compress: &mut Compress, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    compress.reset();
    if !dict.is_empty() {
        compress.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 64);
    let start_in = compress.total_in();
    loop {
        let consumed = (compress.total_in() - start_in) as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = (compress.total_in() - start_in) as usize;
        // Done when all input is in and the flush completed with room to spare (zlib's rule: a
        // flush that filled the output buffer exactly may have more to emit).
        let finished = match status {
            Status::StreamEnd => true,
            Status::Ok | Status::BufError => {
                !last && consumed == data.len() && out.len() < out.capacity()
            }
        };
        if finished {
            break;
        }
        out.reserve(out.capacity().max(4096));
    }
    Ok(out)
}

/// Whether deflating `data` is not worth it: its byte histogram is as flat as random data's
/// and a deflated sample of it (with the dictionary, so repeats across the cut count) saves
/// less than 1%. The histogram test keeps blocks that mix random bytes with text compressed;
/// the sample keeps random-looking data that repeats itself with a period under 8 KiB compressed.
fn looks_incompressible(compress: &mut Compress, dict: &[u8], data: &[u8]) -> io::Result<bool> {
    if data.len() < PROBE_MIN || !flat_histogram(data) {
        return Ok(false);
    }
    let sample = &data[..PROBE_SAMPLE.min(data.len())];
    let deflated = deflate(compress, dict, sample, false)?;
    Ok(deflated.len() >= sample.len() - sample.len() / 100)
}

/// Whether the bytes of `data` are spread as evenly as random bytes: a chi-square statistic
/// against the uniform distribution of at most n/64 (random data gives about 255; text, code,
/// tar headers and zeros give many times n). At that bound Huffman coding alone could save at
/// most ~0.15%. Integer arithmetic, so every machine decides alike and layers stay reproducible.
/// Every fourth byte is counted: plenty to tell random from anything else, at a quarter of the
/// cost, which every compressible block pays.
fn flat_histogram(data: &[u8]) -> bool {
    let mut counts = [0u64; 256];
    for &byte in data.iter().step_by(4) {
        counts[usize::from(byte)] += 1;
    }
    let n = data.len().div_ceil(4) as u64;
    let sum_of_squares: u64 = counts.iter().map(|c| c * c).sum();
    // chi² = 256·Σc²/n − n <= n/64  <=>  256·Σc² <= n² + n²/64
    256 * sum_of_squares <= n * n + n * n / 64
}

/// `data` as deflate stored blocks (at most 65,535 bytes each), the last one final if `last`.
/// Every block of this encoder starts on a byte boundary (the one before ended with a sync
/// flush), where a stored block's header is one byte.
fn stored(data: &[u8], last: bool) -> Vec<u8> {
    if data.is_empty() {
        return vec![u8::from(last), 0x00, 0x00, 0xff, 0xff];
    }
    let max = usize::from(u16::MAX);
    let count = data.len().div_ceil(max);
    let mut out = Vec::with_capacity(data.len() + 5 * count);
    for (i, chunk) in data.chunks(max).enumerate() {
        out.push(u8::from(last && i + 1 == count));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Jobs waiting for a worker and results waiting to be written, under one lock. Plain
/// mutex and condition variables: waiting threads sleep instead of spinning, which matters on a
/// machine busy with other work.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    done: BTreeMap<u64, io::Result<Block>>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    job_ready: Condvar,
    block_done: Condvar,
}

impl Shared {
    fn lock(&self) -> io::Result<MutexGuard<'_, Queue>> {
        self.queue.lock().map_err(|_| closed())
    }
}

/// Worker threads that deflate blocks, started on the first full block (a stream that is one
/// block is deflated on the writing thread).
struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize, level: flate2::Compression) -> io::Result<Pool> {
        let shared = Arc::new(Shared::default());
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            let worker = std::thread::Builder::new()
                .name(format!("gzip-{i}"))
                .spawn(move || work(&shared, level))?;
            workers.push(worker);
        }
        Ok(Pool { shared, workers })
    }
}

fn work(shared: &Shared, level: flate2::Compression) {
    loop {
        let job = {
            let Ok(mut queue) = shared.queue.lock() else {
                return;
            };
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = match shared.job_ready.wait(queue) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        let block = deflate_block(level, &job.dict, &job.data, job.last);
        let Ok(mut queue) = shared.queue.lock() else {
            return;
        };
        queue.done.insert(job.seq, block);
        shared.block_done.notify_all();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.closed = true;
        }
        self.shared.job_ready.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// How blocks get compressed: on the caller's thread, or by a pool with results kept in order.
enum Engine {
    Inline,
    Parallel {
        threads: usize,
        pool: Option<Pool>,
        /// Sequence numbers of the next block to hand out and the next to write.
        next_seq: u64,
        next_write: u64,
    },
}

/// A gzip encoder compressing fixed blocks in parallel; see the module docs for the format.
pub struct GzipEncoder<W: Write> {
    inner: W,
    level: flate2::Compression,
    engine: Engine,
    /// Input of the block being filled; dispatched once full and more input arrives.
    pending: Vec<u8>,
    /// The last `DICT_SIZE` bytes of input before `pending`.
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    /// A full block of zeros after a dictionary of zeros, deflated, once one was seen.
    zero_block: Option<Block>,
}

impl<W: Write> GzipEncoder<W> {
    /// A gzip stream at `level` (0-9) using up to `threads` compressing threads.
    pub fn new(mut inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let level = level.min(9);
        inner.write_all(&gzip_header(level))?;
        let level = flate2::Compression::new(level);
        let engine = if threads <= 1 {
            Engine::Inline
        } else {
            Engine::Parallel {
                threads,
                pool: None,
                next_seq: 0,
                next_write: 0,
            }
        };
        Ok(Self {
            inner,
            level,
            engine,
            pending: Vec::with_capacity(BLOCK_SIZE),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            zero_block: None,
        })
    }

    /// Compresses `pending` as the next block.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK_SIZE));
        let tail = data.len().saturating_sub(DICT_SIZE);
        let next_dict = if data.len() >= DICT_SIZE {
            data[tail..].to_vec()
        } else {
            // Cloned, not taken: this block is primed with the dictionary too.
            let mut d = self.dict.clone();
            d.extend_from_slice(&data);
            let excess = d.len().saturating_sub(DICT_SIZE);
            d.drain(..excess);
            d
        };
        let dict = std::mem::replace(&mut self.dict, next_dict);
        // Zeros after zeros (sparse files, zero-filled images) deflate to the same bytes every
        // time, as a block is a pure function of its input: deflated once, then copied.
        let ready = if !last
            && data.len() == BLOCK_SIZE
            && dict.len() == DICT_SIZE
            && all_zero(&data)
            && all_zero(&dict)
        {
            if self.zero_block.is_none() {
                self.zero_block = Some(deflate_block(self.level, &dict, &data, false)?);
            }
            self.zero_block.clone()
        } else {
            None
        };
        match (&mut self.engine, ready) {
            (Engine::Inline, ready) => {
                let block = match ready {
                    Some(block) => block,
                    None => deflate_block(self.level, &dict, &data, last)?,
                };
                write_block(&mut self.inner, &mut self.crc, block)
            }
            // The whole stream is one block (a small layer): not worth starting threads for.
            (Engine::Parallel { pool: None, .. }, None) if last => {
                let block = deflate_block(self.level, &dict, &data, last)?;
                write_block(&mut self.inner, &mut self.crc, block)
            }
            (
                Engine::Parallel {
                    threads,
                    pool,
                    next_seq,
                    next_write,
                },
                ready,
            ) => {
                let pool = match pool {
                    Some(p) => p,
                    None => pool.insert(Pool::start(*threads, self.level)?),
                };
                {
                    let mut queue = pool.shared.lock()?;
                    match ready {
                        // Done already: written in its turn like the workers' blocks.
                        Some(block) => {
                            queue.done.insert(*next_seq, Ok(block));
                        }
                        None => queue.jobs.push_back(Job {
                            seq: *next_seq,
                            dict,
                            data,
                            last,
                        }),
                    }
                }
                pool.shared.job_ready.notify_one();
                *next_seq += 1;
                // Keep a bounded number of blocks in memory (at most ~8 MiB plus 1 MiB a
                // thread), but enough that the workers stay busy through the scheduling delays
                // of the thread feeding them on a machine busy with other work.
                let limit = (*threads * 4).max(32) as u64;
                write_ready(
                    &pool.shared,
                    &mut self.inner,
                    &mut self.crc,
                    next_write,
                    |in_flight| in_flight > limit,
                    *next_seq,
                )
            }
        }
    }

    /// Waits for every dispatched block and writes it out, in order.
    fn drain(&mut self) -> io::Result<()> {
        if let Engine::Parallel {
            pool: Some(pool),
            next_seq,
            next_write,
            ..
        } = &mut self.engine
        {
            write_ready(
                &pool.shared,
                &mut self.inner,
                &mut self.crc,
                next_write,
                |n| n > 0,
                *next_seq,
            )?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the gzip trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        self.drain()?;
        let crc = self.crc.clone().finalize();
        let len = self.crc.total_len() as u32; // ISIZE is the length modulo 2^32.
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&len.to_le_bytes())?;
        self.inner.flush()?;
        // Stop the workers before handing the writer back.
        self.engine = Engine::Inline;
        Ok(self.inner)
    }
}

fn closed() -> io::Error {
    io::Error::other("gzip worker thread stopped")
}

/// Writes finished blocks in order, waiting for the next one while `must_wait(in_flight)`.
fn write_ready<W: Write>(
    shared: &Shared,
    out: &mut W,
    crc: &mut crc32fast::Hasher,
    next_write: &mut u64,
    must_wait: impl Fn(u64) -> bool,
    next_seq: u64,
) -> io::Result<()> {
    let mut queue = shared.lock()?;
    loop {
        if let Some(block) = queue.done.remove(next_write) {
            *next_write += 1;
            // Write without holding the lock so workers can hand in blocks meanwhile.
            drop(queue);
            write_block(out, crc, block?)?;
            queue = shared.lock()?;
        } else if must_wait(next_seq - *next_write) {
            queue = shared.block_done.wait(queue).map_err(|_| closed())?;
        } else {
            return Ok(());
        }
    }
}

fn write_block<W: Write>(out: &mut W, crc: &mut crc32fast::Hasher, block: Block) -> io::Result<()> {
    out.write_all(&block.deflated)?;
    crc.combine(&block.crc);
    Ok(())
}

/// The 10-byte header Go's `compress/gzip` writes: no name, mtime 0, XFL by level, OS unknown.
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            if self.pending.len() == BLOCK_SIZE {
                self.dispatch(false)?;
            }
            let n = (BLOCK_SIZE - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
        }
        Ok(total)
    }

    /// Writes out every block compressed so far. Never cuts the block being filled: a flush must
    /// not change the compressed bytes.
    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], level: u32, threads: usize, chunk: usize) -> Vec<u8> {
        let mut e = GzipEncoder::new(Vec::new(), level, threads).unwrap();
        for piece in data.chunks(chunk.max(1)) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like runs mixed with pseudo-random bytes.
        random(len)
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                if (i / 4096) % 3 == 0 {
                    x
                } else {
                    b"the quick brown fox "[i % 20]
                }
            })
            .collect()
    }

    /// The stream as the module docs define it, block by block, each with a compressor of its
    /// own, nothing reused.
    fn reference(data: &[u8], level: u32) -> Vec<u8> {
        let mut out = gzip_header(level).to_vec();
        let mut crc = crc32fast::Hasher::new();
        let blocks: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(BLOCK_SIZE).collect()
        };
        for (i, block) in blocks.iter().enumerate() {
            let start = i * BLOCK_SIZE;
            let dict = &data[start.saturating_sub(DICT_SIZE)..start];
            let last = i + 1 == blocks.len();
            let b = deflate_block(flate2::Compression::new(level), dict, block, last).unwrap();
            out.extend_from_slice(&b.deflated);
            crc.combine(&b.crc);
        }
        out.extend_from_slice(&crc.clone().finalize().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    /// Tar-like bytes: 512-byte headers with names and octal fields, short zero-padded bodies.
    fn tar_like(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0u32;
        while out.len() < len {
            let mut header = format!("dir/file-{i}").into_bytes();
            header.resize(100, 0);
            let fields = format!(
                "0000644\x000000000\x000000000\x00{:011o}\x00{:011o}\x00",
                i * 7 % 900,
                1_700_000_000 + i
            );
            header.extend(fields.bytes());
            header.resize(512, 0);
            out.extend(header);
            let mut body = format!("content of file {i}\n")
                .repeat((i % 5 + 1) as usize)
                .into_bytes();
            body.resize(512, 0);
            out.extend(body);
            i += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn blocks_do_not_depend_on_what_was_compressed_before() {
        // With these bytes, zlib-rs reused across blocks (reset between them) gave a second
        // block and a last block of 21,000 bytes other bytes than a new compressor: the
        // encoder's output then depended on which worker took which block.
        let data = tar_like(400_000);
        let stream = &data[data.len() - 2 * BLOCK_SIZE - 21_000..];
        for threads in [1, 2, 3] {
            assert!(
                gzip(stream, 6, threads, 50_000) == reference(stream, 6),
                "threads {threads}"
            );
        }
    }

    #[test]
    fn runs_of_zeros_give_the_bytes_of_deflating_every_block() {
        let mut data = sample(300_000);
        data.resize(data.len() + 5 * BLOCK_SIZE + 1000, 0);
        data.extend(sample(100_000));
        // A block of zeros whose dictionary is not all zeros, then zeros to the end, which is
        // a block shorter than the dictionary (primed with the 32 KiB before it like any other).
        data.resize(data.len() + 4 * BLOCK_SIZE, 0);
        let plain = sample(700_000);
        assert!(
            gzip(&plain, 6, 1, 100_000) == reference(&plain, 6),
            "reference"
        );
        for threads in [1, 3] {
            let got = gzip(&data, 6, threads, 100_000);
            assert!(got == reference(&data, 6), "threads {threads}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&got[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data);
        }
        assert!(!all_zero(&[0, 0, 1]) && !all_zero(&[[0; 64], [0; 64], [2; 64]].concat()));
        assert!(all_zero(&[0; 130]) && all_zero(&[]));
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_write_pattern() {
        let data = sample(3 * BLOCK_SIZE + 12345);
        let reference = gzip(&data, 6, 1, data.len());
        for threads in [2, 3, 8] {
            for chunk in [1000, BLOCK_SIZE, 7 * BLOCK_SIZE] {
                assert_eq!(
                    gzip(&data, 6, threads, chunk),
                    reference,
                    "{threads} threads, {chunk}"
                );
            }
        }
    }

    #[test]
    fn decodes_with_flate2_at_every_level_and_size() {
        for level in [0, 1, 6, 9] {
            for len in [
                0,
                1,
                DICT_SIZE - 1,
                BLOCK_SIZE,
                BLOCK_SIZE + 1,
                5 * BLOCK_SIZE / 2,
            ] {
                let data = sample(len);
                let gz = gzip(&data, level, 3, 50_000);
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out, data, "level {level} len {len}");
            }
        }
    }

    #[test]
    fn dictionary_keeps_ratio_close_to_one_stream() {
        // Repetitive data across block boundaries: without the dictionary every block would
        // restart from nothing and lose matches that reach back over the cut.
        let pattern: Vec<u8> = sample(3 * 4096).into_iter().take(4096).collect();
        let data = pattern.repeat(16 * BLOCK_SIZE / pattern.len());
        let parallel = gzip(&data, 6, 2, BLOCK_SIZE).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!(
            parallel <= single + 16 * 64,
            "parallel {parallel} vs single {single}"
        );
    }

    /// Pseudo-random bytes (xorshift64), the same for every run.
    fn random(len: usize) -> Vec<u8> {
        let mut x = 0x2545f491_4f6cdd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn random_blocks_are_stored_and_read_back() {
        let mut data = random(3 * BLOCK_SIZE);
        data.extend(sample(BLOCK_SIZE + 777));
        data.extend(random(BLOCK_SIZE / 2));
        let gz = gzip(&data, 6, 2, 10_000);
        // The first block is stored: a non-final stored header (one byte) with LEN 65535.
        assert_eq!(&gz[10..15], &[0x00, 0xff, 0xff, 0x00, 0x00]);
        // Three random blocks cost their size plus ~5 bytes per 64 KiB, not deflate's expansion.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        assert_eq!(
            gzip(&data, 6, 1, data.len()),
            gz,
            "thread count changed bytes"
        );
        let random_only = gzip(&random(3 * BLOCK_SIZE), 6, 2, BLOCK_SIZE);
        assert!(random_only.len() <= 3 * BLOCK_SIZE + 3 * 15 + 18 + 5);
    }

    #[test]
    fn random_data_that_repeats_is_still_compressed() {
        // Flat histogram, but a 4 KiB period deflate finds: the sample must catch it.
        let data = random(4096).repeat(4 * BLOCK_SIZE / 4096);
        let gz = gzip(&data, 6, 2, BLOCK_SIZE);
        assert!(gz.len() < data.len() / 20, "{} of {}", gz.len(), data.len());
        // And random bytes mixed with text in one block keep the text compressed.
        let mut mixed = random(BLOCK_SIZE / 8);
        mixed.extend(b"the quick brown fox ".repeat(7 * BLOCK_SIZE / 8 / 20));
        let gz = gzip(&mixed, 6, 1, BLOCK_SIZE);
        assert!(
            gz.len() < mixed.len() / 4,
            "{} of {}",
            gz.len(),
            mixed.len()
        );
    }

    #[test]
    fn stored_blocks_of_every_shape_decode() {
        for len in [0, 1, 65_535, 65_536, 131_070, 131_071] {
            let data = random(len);
            for last in [false, true] {
                let mut raw = stored(&data, last);
                if !last {
                    raw.extend(stored(&[], true));
                }
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out, data, "len {len} last {last}");
            }
        }
    }

    #[test]
    fn gunzip_reads_it() {
        let data = sample(2 * BLOCK_SIZE + 99);
        let gz = gzip(&data, 6, 2, 4096);
        let dir = std::env::temp_dir().join(format!("strata-gzip-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("data.gz");
        std::fs::write(&file, &gz).unwrap();
        let out = std::process::Command::new("gzip")
            .args(["-t", "-v"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = std::process::Command::new("gzip")
            .args(["-d", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
}
