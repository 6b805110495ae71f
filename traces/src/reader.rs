//! Reading trace files: plain or gzip (recognised by the magic bytes `1f 8b`, whatever the file
//! is called), streamed line by line with 1-based line numbers of the decompressed text.
//!
//! Nothing is loaded whole: a [`LineReader`] holds one line at a time. A line longer than
//! [`LINE_BYTES_MAX`] or not valid UTF-8 is a line error (skippable), and the reader goes on
//! with the next line.

use crate::error::TraceError;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;

/// The gzip magic bytes.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The longest line accepted, in bytes (a MetaCentrum SWF line with a 64-node list is ~500).
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// Buffer size for reading trace files.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Wraps `inner` so that gzip data is decompressed transparently: the first two bytes decide.
pub fn decompressing(inner: impl Read + 'static) -> io::Result<Box<dyn BufRead>> {
    let mut inner = inner;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < magic.len() {
        match inner.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let rejoined = Cursor::new(magic[..got].to_vec()).chain(inner);
    if got == 2 && magic == GZIP_MAGIC {
        Ok(Box::new(BufReader::with_capacity(
            READ_BUFFER_BYTES,
            MultiGzDecoder::new(rejoined),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(
            READ_BUFFER_BYTES,
            rejoined,
        )))
    }
}

/// Opens `path`, decompressing gzip transparently.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, TraceError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| TraceError::io(&name, 0, e))?;
    decompressing(file).map_err(|e| TraceError::io(&name, 0, e))
}

/// Streams the lines of one file, without their `\n` / `\r\n` endings.
pub struct LineReader {
    inner: Box<dyn BufRead>,
    file: String,
    line_no: u64,
    buf: Vec<u8>,
}

impl LineReader {
    /// Opens a file (plain or gzip).
    pub fn open(path: &Path) -> Result<LineReader, TraceError> {
        Ok(LineReader::from_buf_read(
            open(path)?,
            path.display().to_string(),
        ))
    }

    /// Reads from any byte source (plain or gzip); `file` names it in errors.
    pub fn new(
        reader: impl Read + 'static,
        file: impl Into<String>,
    ) -> Result<LineReader, TraceError> {
        let file = file.into();
        let inner = decompressing(reader).map_err(|e| TraceError::io(&file, 0, e))?;
        Ok(LineReader::from_buf_read(inner, file))
    }

    fn from_buf_read(inner: Box<dyn BufRead>, file: String) -> LineReader {
        LineReader {
            inner,
            file,
            line_no: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    /// The name used in errors.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The number of the line last returned (1-based; 0 before the first).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// A line error at the current line.
    pub fn error(&self, message: impl Into<String>) -> TraceError {
        TraceError::line(&self.file, self.line_no, message)
    }

    /// The next line and its number: `Ok(None)` at the end, `Err` for an IO error (fatal) or
    /// for a line that is too long or not UTF-8 (a line error; the reader has moved past it).
    pub fn next_line(&mut self) -> Result<Option<(u64, &str)>, TraceError> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TraceError::io(&self.file, self.line_no, e)),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i)),
                None => (available, None),
            };
            if !too_long {
                if self.buf.len() + chunk.len() > LINE_BYTES_MAX {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = found.map_or(chunk.len(), |i| i + 1);
            self.inner.consume(used);
            if found.is_some() {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line_no += 1;
        if too_long {
            return Err(self.error(format!("line longer than {LINE_BYTES_MAX} bytes")));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(Some((self.line_no, s))),
            Err(e) => Err(TraceError::line(
                &self.file,
                self.line_no,
                format!(
                    "not UTF-8 text (invalid byte at column {})",
                    e.valid_up_to() + 1
                ),
            )),
        }
    }
}

/// Calls `record` for every non-blank line after the first `skip_lines` lines, turning its
/// `Err(message)` into a line error that `skipped` absorbs or that stops the import.
pub(crate) fn for_each_record(
    lines: &mut LineReader,
    opts: &crate::ImportOptions,
    skipped: &mut crate::error::Skipped,
    mut record: impl FnMut(u64, &str) -> Result<(), String>,
) -> Result<(), TraceError> {
    loop {
        let (line_no, line) = match lines.next_line() {
            Ok(Some(x)) => x,
            Ok(None) => return Ok(()),
            Err(e) => {
                skipped.absorb(e, opts)?;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Err(message) = record(line_no, line) {
            skipped.absorb(TraceError::line(&lines.file, line_no, message), opts)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn lines(bytes: Vec<u8>) -> Vec<Result<String, String>> {
        let mut r = LineReader::new(Cursor::new(bytes), "t").unwrap();
        let mut out = Vec::new();
        loop {
            match r.next_line() {
                Ok(Some((_, l))) => out.push(Ok(l.to_string())),
                Ok(None) => break,
                Err(e) => {
                    let fatal = !e.is_line_error();
                    out.push(Err(e.to_string()));
                    if fatal {
                        break;
                    }
                }
            }
        }
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn plain_and_gzip_give_the_same_lines() {
        let text = b"a,b\r\nc,d\n\nlast".to_vec();
        let want: Vec<Result<String, String>> = vec![
            Ok("a,b".into()),
            Ok("c,d".into()),
            Ok("".into()),
            Ok("last".into()),
        ];
        assert_eq!(lines(text.clone()), want);
        assert_eq!(lines(gzip(&text)), want);
    }

    #[test]
    fn gzip_is_recognised_by_magic_not_name() {
        let dir = std::env::temp_dir().join(format!("berth-traces-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("looks-plain.csv");
        std::fs::write(&p, gzip(b"x\ny\n")).unwrap();
        let mut r = LineReader::open(&p).unwrap();
        assert_eq!(r.next_line().unwrap(), Some((1, "x")));
        assert_eq!(r.next_line().unwrap(), Some((2, "y")));
        assert_eq!(r.next_line().unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_utf8_is_a_line_error_and_reading_goes_on() {
        let got = lines(b"ok\n\xff\xfe\nafter\n".to_vec());
        assert_eq!(got[0], Ok("ok".into()));
        assert_eq!(
            got[1],
            Err("t:2: not UTF-8 text (invalid byte at column 1)".into())
        );
        assert_eq!(got[2], Ok("after".into()));
    }

    #[test]
    fn overlong_line_is_refused_without_keeping_it() {
        let mut text = vec![b'x'; LINE_BYTES_MAX + 10];
        text.extend_from_slice(b"\nnext\n");
        let got = lines(text);
        assert_eq!(got.len(), 2);
        assert!(got[0]
            .as_ref()
            .unwrap_err()
            .starts_with("t:1: line longer than"));
        assert_eq!(got[1], Ok("next".into()));
    }

    #[test]
    fn truncated_gzip_is_an_io_error_naming_the_file() {
        let mut z = gzip(&b"line\n".repeat(10_000));
        z.truncate(z.len() / 2);
        let got = lines(z);
        let last = got.last().unwrap();
        assert!(last.is_err(), "{last:?}");
        assert!(last.as_ref().unwrap_err().starts_with("t:"), "{last:?}");
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let e = LineReader::open(Path::new("/nonexistent/berth/x.swf"))
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("/nonexistent/berth/x.swf: "),
            "{e}"
        );
    }
}
