//! Byte-stream helpers for remote output: UTF-8 decoding across chunk boundaries, and the
//! control-line filter that takes the wrapper's marker lines (process group, batch steps) out of
//! stderr before it reaches anyone.

/// Decodes a byte stream into text without splitting a UTF-8 character across chunks; invalid
/// bytes become U+FFFD. ANSI escapes are plain ASCII and pass through untouched.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Feeds bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.pending);
        let cut = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
        self.pending.drain(..cut);
        text
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// How many bytes at the end of `b` are the start of a UTF-8 sequence that is not complete yet.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let byte = b[b.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: look further back for the lead
        }
        let need = if byte & 0b1110_0000 == 0b1100_0000 {
            2
        } else if byte & 0b1111_0000 == 0b1110_0000 {
            3
        } else if byte & 0b1111_1000 == 0b1111_0000 {
            4
        } else {
            return 0;
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// A control line found in stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The remote command's process group and shell pid.
    Pgid {
        /// Process group id.
        pgid: u32,
        /// The wrapper shell's pid.
        pid: u32,
    },
    /// A batch step begins.
    Step {
        /// 1-based.
        step: u32,
        /// Number of steps.
        total: u32,
    },
    /// A batch step failed.
    Fail {
        /// 1-based.
        step: u32,
        /// Its exit code.
        code: i32,
    },
}

/// Splits stderr into pass-through bytes and control lines starting with a per-run prefix
/// (`\x1eFLEETBUS-<nonce> `). Only whole lines that begin with the prefix are taken, so command
/// output cannot forge one without knowing the nonce.
#[derive(Debug)]
pub struct ControlFilter {
    prefix: Vec<u8>,
    /// Bytes of the current line held back while they still match the prefix.
    held: Vec<u8>,
    at_line_start: bool,
    /// Inside a control line (prefix matched), collecting until newline.
    in_control: bool,
}

impl ControlFilter {
    /// A filter for `prefix`.
    pub fn new(prefix: &str) -> Self {
        ControlFilter {
            prefix: prefix.as_bytes().to_vec(),
            held: Vec::new(),
            at_line_start: true,
            in_control: false,
        }
    }

    /// Feeds bytes; returns pass-through bytes and parsed control lines.
    pub fn push(&mut self, bytes: &[u8]) -> (Vec<u8>, Vec<Control>) {
        let mut out = Vec::with_capacity(bytes.len());
        let mut controls = Vec::new();
        for &b in bytes {
            if self.in_control {
                if b == b'\n' {
                    if let Some(c) = parse_control(&self.held[self.prefix.len()..]) {
                        controls.push(c);
                    }
                    self.held.clear();
                    self.in_control = false;
                    self.at_line_start = true;
                } else {
                    self.held.push(b);
                }
                continue;
            }
            if self.at_line_start {
                self.held.push(b);
                let n = self.held.len();
                if self.prefix[..n.min(self.prefix.len())] == self.held[..n.min(self.prefix.len())]
                {
                    if n >= self.prefix.len() {
                        self.in_control = true;
                    }
                    continue;
                }
                // Diverged: release what was held as ordinary output.
                out.append(&mut self.held);
                self.at_line_start = b == b'\n';
                continue;
            }
            out.push(b);
            if b == b'\n' {
                self.at_line_start = true;
            }
        }
        (out, controls)
    }

    /// Releases anything held at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.in_control {
            self.held.clear();
        }
        std::mem::take(&mut self.held)
    }
}

fn parse_control(rest: &[u8]) -> Option<Control> {
    let text = std::str::from_utf8(rest).ok()?;
    let mut words = text.split_whitespace();
    match words.next()? {
        "PGID" => Some(Control::Pgid {
            pgid: words.next()?.parse().ok()?,
            pid: words.next()?.parse().ok()?,
        }),
        "STEP" => {
            let (s, t) = words.next()?.split_once('/')?;
            Some(Control::Step {
                step: s.parse().ok()?,
                total: t.parse().ok()?,
            })
        }
        "FAIL" => Some(Control::Fail {
            step: words.next()?.parse().ok()?,
            code: words.next()?.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_never_split() {
        let text = "héllo ✓ 🚀 \x1b[31mred\x1b[0m";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut d = Utf8Stream::default();
            let mut s = d.push(&bytes[..cut]);
            s.push_str(&d.push(&bytes[cut..]));
            s.push_str(&d.finish());
            assert_eq!(s, text, "cut at {cut}");
        }
        let mut d = Utf8Stream::default();
        assert_eq!(d.push(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn control_lines_are_taken_out_byte_by_byte() {
        let p = "\x1eFLEETBUS-n1 ";
        let input =
            format!("{p}PGID 42 42\nwarning: x\n{p}STEP 1/2\nnot {p}STEP 9/9\n{p}FAIL 2 7\ntail");
        for chunk in [1, 2, 5, 1000] {
            let mut f = ControlFilter::new(p);
            let mut out = Vec::new();
            let mut ctl = Vec::new();
            for piece in input.as_bytes().chunks(chunk) {
                let (o, c) = f.push(piece);
                out.extend(o);
                ctl.extend(c);
            }
            out.extend(f.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("warning: x\nnot {p}STEP 9/9\ntail"),
                "chunk {chunk}"
            );
            assert_eq!(
                ctl,
                vec![
                    Control::Pgid { pgid: 42, pid: 42 },
                    Control::Step { step: 1, total: 2 },
                    Control::Fail { step: 2, code: 7 }
                ]
            );
        }
    }

    #[test]
    fn a_forged_prefix_with_another_nonce_passes_through() {
        let mut f = ControlFilter::new("\x1eFLEETBUS-real ");
        let (out, ctl) = f.push(b"\x1eFLEETBUS-fake PGID 1 1\n");
        assert!(ctl.is_empty());
        assert_eq!(out, b"\x1eFLEETBUS-fake PGID 1 1\n");
    }
}
